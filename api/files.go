package api

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/vramcram/vramcram/api/batch"
	"github.com/vramcram/vramcram/store"
)

// fileView is a file in OpenAI's shape.
type fileView struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"`
}

func viewFile(f store.File) fileView {
	return fileView{ID: f.ID, Object: "file", Bytes: f.Bytes, CreatedAt: f.CreatedAt.Unix(), Filename: f.Filename,
		Purpose: f.Purpose, Status: "processed"}
}

// maxFieldBytes bounds a multipart form field other than the file.
const maxFieldBytes = 1 << 10

// uploadFile handles POST /v1/files: multipart with `file` and `purpose`
// (batch). The file streams to disk part by part; a purpose other than
// batch is a 400, and a file saved before its purpose was read is deleted.
func (s *Server) uploadFile(c echo.Context) error {
	mt, _, _ := mime.ParseMediaType(c.Request().Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		return &Error{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMed,
			Message: "POST /v1/files takes multipart/form-data with the fields file and purpose"}
	}
	streamToDisk(c.Request()) // the file part goes to disk as it arrives
	mr, err := c.Request().MultipartReader()
	if err != nil {
		return fieldErr("file", "malformed multipart body: "+err.Error())
	}
	var saved *store.File
	purpose := ""
	fail := func(err error) error {
		if saved != nil {
			if _, derr := s.cfg.Batches.DeleteFile(saved.ID); derr != nil {
				s.log.Warn("remove rejected upload", "file_id", saved.ID, "err", derr)
			}
		}
		return err
	}
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ae, ok := s.bodyReadError(c.Response(), err); ok {
				return fail(ae)
			}
			return fail(fieldErr("file", "malformed multipart body: "+err.Error()))
		}
		switch p.FormName() {
		case "purpose":
			b, _ := io.ReadAll(io.LimitReader(p, maxFieldBytes))
			purpose = strings.TrimSpace(string(b))
			if purpose != batch.PurposeBatch {
				return fail(fieldErr("purpose", fmt.Sprintf("%q is not supported here; use %q", purpose, batch.PurposeBatch)))
			}
		case "file":
			if saved != nil {
				return fail(fieldErr("file", "more than one file"))
			}
			f, err := s.cfg.Batches.SaveFile(c.Request().Context(), p.FileName(), p)
			if err != nil {
				if ae, ok := s.bodyReadError(c.Response(), err); ok {
					return fail(ae)
				}
				return fail(batchError(err))
			}
			saved = &f
		}
		_ = p.Close()
	}
	switch {
	case saved == nil:
		return fieldErr("file", "required, a JSONL file part")
	case purpose == "":
		return fail(fieldErr("purpose", "required: "+batch.PurposeBatch))
	}
	return c.JSON(http.StatusOK, viewFile(*saved))
}

// getFile handles GET /v1/files/{id}.
func (s *Server) getFile(c echo.Context) error {
	f, err := s.cfg.Batches.GetFile(c.Param("id"))
	if err != nil {
		return batchError(err)
	}
	return c.JSON(http.StatusOK, viewFile(f))
}

// listFiles handles GET /v1/files?purpose=&limit=&after=: newest first.
func (s *Server) listFiles(c echo.Context) error {
	limit, err := listLimit(c)
	if err != nil {
		return err
	}
	fs, err := s.cfg.Batches.ListFiles(c.QueryParam("purpose"), c.QueryParam("after"), limit+1)
	if err != nil {
		return fmt.Errorf("list files: %w", err)
	}
	views := make([]fileView, len(fs))
	for k, f := range fs {
		views[k] = viewFile(f)
	}
	return c.JSON(http.StatusOK, newPage(views, limit, func(v fileView) string { return v.ID }))
}

// fileContent handles GET /v1/files/{id}/content: the bytes as stored.
func (s *Server) fileContent(c echo.Context) error {
	f, fh, err := s.cfg.Batches.OpenFile(c.Param("id"))
	if err != nil {
		return batchError(err)
	}
	defer fh.Close()
	c.Response().Header().Set("Content-Type", "application/octet-stream")
	c.Response().Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", f.Filename))
	http.ServeContent(c.Response(), c.Request(), "", f.CreatedAt, fh)
	return nil
}

// deleteFile handles DELETE /v1/files/{id}.
func (s *Server) deleteFile(c echo.Context) error {
	f, err := s.cfg.Batches.DeleteFile(c.Param("id"))
	if err != nil {
		return batchError(err)
	}
	return c.JSON(http.StatusOK, map[string]any{"id": f.ID, "object": "file", "deleted": true})
}
