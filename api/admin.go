package api

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// CodeInvalidConfig is the code of a config reload that was rejected.
const CodeInvalidConfig = "invalid_config"

// routeAdmin adds POST /admin/reload and GET /admin/config. Both need a key
// when server.api_keys is set, as every route but /health and the page.
func (s *Server) routeAdmin(e *echo.Echo) {
	e.POST("/admin/reload", s.adminReload)
	e.GET("/admin/config", s.adminConfig)
}

// adminReload handles POST /admin/reload: the daemon re-reads its config
// file and applies it. 200 with what changed; 422 invalid_config when the
// new config was rejected (the running one stays), its error naming the key.
func (s *Server) adminReload(c echo.Context) error {
	if s.cfg.Reload == nil {
		return apiErr(http.StatusNotImplemented, CodeInternal, "config reload is not available")
	}
	rep, err := s.cfg.Reload(c.Request().Context())
	if err != nil {
		return apiErr(http.StatusUnprocessableEntity, CodeInvalidConfig, "config not applied, the running config stays in force: "+err.Error())
	}
	return c.JSON(http.StatusOK, rep)
}

// adminConfig handles GET /admin/config: the config in force (API keys as
// hashes), for vramcram check -url.
func (s *Server) adminConfig(c echo.Context) error {
	if s.cfg.RunningConfig == nil {
		return apiErr(http.StatusNotImplemented, CodeInternal, "the running config is not available")
	}
	return c.JSON(http.StatusOK, s.cfg.RunningConfig())
}
