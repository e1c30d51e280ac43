package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vramcram/vramcram/api/wire"
)

// The batch client command: OpenAI batches from the command line.
//
//	vramcram batch submit FILE.jsonl --endpoint /v1/chat/completions [--wait] [-o OUT]
//	vramcram batch status|output|cancel ID
//	vramcram batch ls

func init() { clientCommands["batch"] = batchCommand }

type batchOpts struct {
	endpoint string
	wait     bool
	output   string
	quiet    bool
	poll     time.Duration
}

func batchCommand() *clientCommand {
	o := &batchOpts{}
	return &clientCommand{
		usage: "submit|status|output|cancel|ls …",
		help:  "OpenAI batches: submit FILE.jsonl [--wait], status|output|cancel BATCH_ID, ls",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&o.endpoint, "endpoint", "/v1/chat/completions", "submit: the OpenAI path of every line")
			fs.BoolVar(&o.wait, "wait", false, "submit: show progress until the batch ends, then write its output")
			fs.StringVar(&o.output, "o", "", "submit --wait, output: file to write (default BATCH_ID.jsonl; output: stdout)")
			fs.BoolVar(&o.quiet, "q", false, "submit --wait: no progress on stderr")
			fs.DurationVar(&o.poll, "poll", time.Second, "submit --wait: how often to read the batch's status")
		},
		run: func(ctx context.Context, c *client, _ *flag.FlagSet, args []string) error {
			return batchCmd(ctx, c, o, args)
		},
	}
}

func batchCmd(ctx context.Context, c *client, o *batchOpts, args []string) error {
	if len(args) == 0 {
		return usagef("want a subcommand: submit, status, output, cancel or ls")
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "submit":
		file, err := oneArg(args, "FILE.jsonl")
		if err != nil {
			return err
		}
		if o.poll <= 0 {
			return usagef("--poll %s: must be more than 0", o.poll)
		}
		return batchSubmit(ctx, c, o, file)
	case "status":
		id, err := oneArg(args, "BATCH_ID")
		if err != nil {
			return err
		}
		return batchShow(ctx, c, http.MethodGet, "/v1/batches/"+url.PathEscape(id))
	case "cancel":
		id, err := oneArg(args, "BATCH_ID")
		if err != nil {
			return err
		}
		return batchShow(ctx, c, http.MethodPost, "/v1/batches/"+url.PathEscape(id)+"/cancel")
	case "output":
		id, err := oneArg(args, "BATCH_ID")
		if err != nil {
			return err
		}
		var b wire.Batch
		if _, err := c.getJSON(ctx, "/v1/batches/"+url.PathEscape(id), &b); err != nil {
			return err
		}
		return writeBatchOutput(ctx, c, b, o.output)
	case "ls":
		if len(args) != 0 {
			return usagef("ls takes no arguments")
		}
		return batchList(ctx, c)
	}
	return usagef("unknown batch subcommand %q: want submit, status, output, cancel or ls", sub)
}

// upload streams path to POST /v1/files as multipart (no whole-file buffer)
// and returns the file's id.
func (c *client) upload(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := mw.WriteField("purpose", "batch")
		if err == nil {
			var fw io.Writer
			if fw, err = mw.CreateFormFile("file", filepath.Base(path)); err == nil {
				if _, err = io.Copy(fw, f); err == nil {
					err = mw.Close()
				}
			}
		}
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/files", pr)
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.send(c.stream, req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", decodeAPIError(resp.StatusCode, b)
	}
	var out struct{ ID string }
	if err := json.Unmarshal(b, &out); err != nil || out.ID == "" {
		return "", fmt.Errorf("POST /v1/files: unexpected answer %q", b)
	}
	return out.ID, nil
}

func batchSubmit(ctx context.Context, c *client, o *batchOpts, path string) error {
	fileID, err := c.upload(ctx, path)
	if err != nil {
		return fmt.Errorf("upload %s: %w", path, err)
	}
	body := map[string]any{"input_file_id": fileID, "endpoint": o.endpoint, "completion_window": "24h"}
	raw, err := c.do(ctx, http.MethodPost, "/v1/batches", body)
	if err != nil {
		return err
	}
	var b wire.Batch
	if err := json.Unmarshal(raw, &b); err != nil {
		return fmt.Errorf("POST /v1/batches: unexpected answer: %w", err)
	}
	if !o.wait {
		if c.json {
			c.printJSON(raw)
		} else {
			fmt.Fprintln(c.stdout, b.ID)
		}
		return nil
	}
	if !o.quiet {
		fmt.Fprintf(c.stderr, "batch %s: uploaded %s as %s\n", b.ID, path, fileID)
	}
	b, err = waitBatch(ctx, c, o, b)
	if err != nil {
		return err
	}
	if b.Status == "failed" {
		return batchFailure(b)
	}
	out := o.output
	if out == "" {
		out = b.ID + ".jsonl"
	}
	if err := writeBatchOutput(ctx, c, b, out); err != nil {
		return err
	}
	if b.Status != "completed" {
		return fmt.Errorf("batch %s ended %s", b.ID, b.Status)
	}
	return nil
}

// batchFailure describes a batch that failed validation.
func batchFailure(b wire.Batch) error {
	var lines []string
	if b.Errors != nil {
		for k, e := range b.Errors.Data {
			if k == 5 {
				lines = append(lines, fmt.Sprintf("… and %d more", len(b.Errors.Data)-k))
				break
			}
			lines = append(lines, fmt.Sprintf("line %d: %s (%s)", e.Line, e.Message, e.Code))
		}
	}
	return fmt.Errorf("batch %s failed validation:\n  %s", b.ID, strings.Join(lines, "\n  "))
}

// waitBatch polls the batch until it ends, drawing a progress bar.
func waitBatch(ctx context.Context, c *client, o *batchOpts, b wire.Batch) (wire.Batch, error) {
	p := &progressBar{w: c.stderr, tty: isTerminal(c.stderr), start: time.Now(), quiet: o.quiet}
	t := time.NewTicker(o.poll)
	defer t.Stop()
	for !b.Final() {
		select {
		case <-ctx.Done():
			p.end()
			return b, &exitError{code: 130, err: fmt.Errorf("stopped waiting; batch %s goes on (vramcram batch status %s)", b.ID, b.ID)}
		case <-t.C:
		}
		if _, err := c.getJSON(ctx, "/v1/batches/"+url.PathEscape(b.ID), &b); err != nil {
			return b, err
		}
		p.draw(b)
	}
	p.end()
	return b, nil
}

// progressBar draws done/failed/total, the rate and an ETA on stderr: one
// rewritten line on a terminal, else a line whenever the counts change
// (at most every 5 s).
type progressBar struct {
	w     io.Writer
	tty   bool
	quiet bool
	start time.Time
	last  time.Time
	drawn bool
}

func (p *progressBar) draw(b wire.Batch) {
	if p.quiet {
		return
	}
	now := time.Now()
	if !p.tty && now.Sub(p.last) < 5*time.Second && !b.Final() {
		return
	}
	p.last = now
	rc := b.RequestCounts
	finished := rc.Completed + rc.Failed
	const width = 30
	filled := 0
	if rc.Total > 0 {
		filled = width * finished / rc.Total
	}
	rate := float64(finished) / math.Max(now.Sub(p.start).Seconds(), 0.001)
	eta := "?"
	if rate > 0 && rc.Total > finished {
		eta = (time.Duration(float64(rc.Total-finished)/rate) * time.Second).Round(time.Second).String()
	} else if rc.Total > 0 && rc.Total == finished {
		eta = "0s"
	}
	line := fmt.Sprintf("[%s%s] %d/%d done, %d failed, %.1f lines/s, ETA %s  %s",
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), rc.Completed, rc.Total, rc.Failed, rate, eta, b.Status)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.drawn = true
		return
	}
	fmt.Fprintln(p.w, line)
}

func (p *progressBar) end() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// writeBatchOutput downloads the batch's output to path (stdout when
// empty and not --wait's default), and its error file beside it.
func writeBatchOutput(ctx context.Context, c *client, b wire.Batch, path string) error {
	if b.OutputFile() == "" && b.ErrorFile() == "" {
		return fmt.Errorf("batch %s (%s) has no output file", b.ID, b.Status)
	}
	if b.OutputFile() != "" {
		if err := download(ctx, c, b.OutputFile(), path); err != nil {
			return err
		}
	}
	if b.ErrorFile() != "" {
		errPath := b.ID + ".errors.jsonl"
		if path != "" && path != "-" {
			errPath = strings.TrimSuffix(path, filepath.Ext(path)) + ".errors.jsonl"
		}
		if err := download(ctx, c, b.ErrorFile(), errPath); err != nil {
			return err
		}
		fmt.Fprintf(c.stderr, "%d failed lines written to %s\n", b.RequestCounts.Failed, errPath)
	}
	return nil
}

// download writes file id's content to path ("" or "-": stdout).
func download(ctx context.Context, c *client, id, path string) error {
	req, err := c.request(ctx, http.MethodGet, "/v1/files/"+url.PathEscape(id)+"/content", nil)
	if err != nil {
		return err
	}
	resp, err := c.send(c.stream, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return decodeAPIError(resp.StatusCode, b)
	}
	if path == "" || path == "-" {
		_, err = io.Copy(c.stdout, resp.Body)
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	fmt.Fprintf(c.stderr, "wrote %s\n", path)
	return nil
}

// batchShow sends a request whose answer is a batch and prints it.
func batchShow(ctx context.Context, c *client, method, path string) error {
	raw, err := c.do(ctx, method, path, nil)
	if err != nil {
		return err
	}
	if c.json {
		c.printJSON(raw)
		return nil
	}
	var b wire.Batch
	if err := json.Unmarshal(raw, &b); err != nil {
		return fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
	}
	rc := b.RequestCounts
	fmt.Fprintf(c.stdout, "%s  %s  %s  %d/%d done, %d failed\n", b.ID, b.Status, b.Endpoint, rc.Completed, rc.Total, rc.Failed)
	if b.OutputFile() != "" {
		fmt.Fprintf(c.stdout, "output: %s\n", b.OutputFile())
	}
	if b.ErrorFile() != "" {
		fmt.Fprintf(c.stdout, "errors: %s\n", b.ErrorFile())
	}
	if b.Status == "failed" {
		fmt.Fprintln(c.stdout, batchFailure(b))
	}
	return nil
}

func batchList(ctx context.Context, c *client) error {
	var page struct {
		Data []wire.Batch `json:"data"`
	}
	raw, err := c.getJSON(ctx, "/v1/batches?limit=100", &page)
	if err != nil {
		return err
	}
	if c.json {
		c.printJSON(raw)
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tENDPOINT\tDONE\tFAILED\tTOTAL\tCREATED")
	for _, b := range page.Data {
		rc := b.RequestCounts
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", b.ID, b.Status, b.Endpoint, rc.Completed, rc.Failed, rc.Total,
			time.Unix(b.CreatedAt, 0).Format(time.DateTime))
	}
	return tw.Flush()
}
