package api

import (
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"
)

// loadUnload handles POST /models/{name}/load and /unload. load is a
// preloading hint: the model loads when it fits beside busy work; unload
// drains the model (running jobs finish) and stops its engine.
func (s *Server) loadUnload(load bool) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctl, ok := s.sched.(ModelController)
		if !ok {
			return apiErr(http.StatusNotImplemented, CodeInternal, "model control is not available")
		}
		name, known := s.resolveModel(c.Param("name"))
		if !known {
			return s.unknownModel(c.Param("name"))
		}
		ctx := c.Request().Context()
		action, err := "unload", error(nil)
		if load {
			action, err = "load", ctl.Load(ctx, name)
		} else {
			err = ctl.Unload(ctx, name)
		}
		if err != nil {
			if ae, ok := admitError(err).(*Error); ok {
				return ae
			}
			return fmt.Errorf("%s %s: %w", action, name, err)
		}
		return c.JSON(http.StatusAccepted, map[string]string{"model": name, "action": action, "status": "accepted"})
	}
}
