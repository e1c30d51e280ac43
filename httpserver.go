package main

import (
	"net"
	"net/http"
	"time"

	"github.com/vramcram/vramcram/config"

	"github.com/vramcram/vramcram/api"
)

// guardAPIConfig adds the server's browser guards and request limits to ac.
func guardAPIConfig(ac *api.Config, cfg *config.Config) {
	s := cfg.Server
	ac.ListenHost, ac.AllowedHosts, ac.CORSOrigins = s.Host, s.AllowedHosts, s.CORSOrigins
	ac.BodyIdleTimeout = seconds(s.BodyIdleTimeoutSeconds)
	ac.MaxInflightBodyBytes = int64(s.MaxInflightBodyMB) << 20
	ac.MaxEventClients = s.MaxEventClients
	// No engine takes prompts as one argv element any more: sd-cli gets long
	// prompts through --prompt-file (engine/sdcpp), so ArgvPromptModels
	// stays empty and only server.max_prompt_chars bounds them.
}

// newAPIServer is the HTTP server of the API. Bodies have their own idle
// timeout (api.Config.BodyIdleTimeout), so no ReadTimeout cuts off a slow
// upload that keeps sending; headers must arrive within ReadHeaderTimeout.
func newAPIServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// listenAPI listens on addr with at most server.max_connections open
// connections.
func listenAPI(addr string, cfg *config.Config) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return api.LimitListener(ln, cfg.Server.MaxConnections), nil
}
