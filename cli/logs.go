package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// The logs command is registered here so that cli.go's table stays as it is.
func init() { clientCommands["logs"] = logsCommand }

func logsCommand() *clientCommand {
	var follow bool
	tail := -1
	return &clientCommand{
		usage: "[MODEL]",
		help:  "print the daemon's recent log lines, or MODEL's engine output; -f follows",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&follow, "f", false, "follow: keep printing new lines until interrupted (or, for MODEL, until its engine exits)")
			fs.IntVar(&tail, "n", -1, "print only the last N recent lines (default: all the server keeps)")
		},
		run: func(ctx context.Context, c *client, _ *flag.FlagSet, args []string) error {
			if len(args) > 1 {
				return usagef("logs takes at most one MODEL")
			}
			path := "/logs/stream"
			if len(args) == 1 {
				path += "/" + url.PathEscape(args[0])
			}
			q := url.Values{"follow": {fmt.Sprint(follow)}}
			if tail >= 0 {
				q.Set("tail", fmt.Sprint(tail))
			}
			return c.copyLines(ctx, path+"?"+q.Encode())
		},
	}
}

// copyLines GETs a text/plain line stream and copies it to stdout as it
// comes. An interrupt ends it without an error.
func (c *client) copyLines(ctx context.Context, path string) error {
	req, err := c.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	resp, err := c.send(c.stream, req)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return decodeAPIError(resp.StatusCode, b)
	}
	buf := make([]byte, 32<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := c.stdout.Write(buf[:n]); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF), ctx.Err() != nil:
			return nil
		default:
			return fmt.Errorf("read log stream: %w", rerr)
		}
	}
}
