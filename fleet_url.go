package main

import (
	"net"
	"net/url"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/vramcram/vramcram/config"
)

// advertiseURL is how the other nodes of a fleet reach this one:
// storage.redis.advertise_url, else http://server.host:server.port. A
// wildcard host (0.0.0.0, ::, empty) names no address the others can use
// (every node would advertise the same one, and none would ever relay), so
// it becomes the local address of this machine's route to Redis, which
// the other nodes share.
func advertiseURL(cfg *config.Config) string {
	if a := cfg.Storage.Redis.AdvertiseURL; a != "" {
		return a
	}
	host := cfg.Server.Host
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if local := routeTo(cfg.Storage.Redis.URL); local != "" {
			host = local
		}
	}
	return (&url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(cfg.Server.Port))}).String()
}

// routeTo returns the local IP this machine would use to reach the Redis
// server of redisURL, or "" (a Unix socket, an address that does not
// resolve). A UDP "dial" sends nothing: it only picks the route.
func routeTo(redisURL string) string {
	opt, err := redis.ParseURL(redisURL)
	if err != nil || opt.Network == "unix" {
		return ""
	}
	c, err := net.Dial("udp", opt.Addr)
	if err != nil {
		return ""
	}
	defer c.Close()
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return a.IP.String()
	}
	return ""
}
