package cli

import (
	"context"
	"fmt"
	"io"
)

// RunningConfig asks the daemon at rawURL (default $VRAMCRAM_URL, with the
// key of $VRAMCRAM_API_KEY) for the config it runs, GET /admin/config, and
// decodes the answer into out. It returns the daemon's base URL.
func RunningConfig(ctx context.Context, rawURL string, getenv func(string) string, out any) (string, error) {
	c, err := newClient(rawURL, IO{stdout: io.Discard, stderr: io.Discard, getenv: getenv})
	if err != nil {
		return "", err
	}
	if _, err := c.getJSON(ctx, "/admin/config", out); err != nil {
		return c.base, fmt.Errorf("running config of %s: %w", c.base, err)
	}
	return c.base, nil
}
