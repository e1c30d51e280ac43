package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Environment variables of the client commands. Neither is a config key:
// config.Load skips both.
const (
	EnvURL    = "VRAMCRAM_URL"     // server address; default http://127.0.0.1:8000
	EnvAPIKey = "VRAMCRAM_API_KEY" // Bearer key when the server sets server.api_keys
)

const defaultURL = "http://127.0.0.1:8000"

// IO is what a client command reads and writes: the process's streams
// and environment in main, fakes in tests.
type IO struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// NewIO makes the IO of a client command.
func NewIO(stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) IO {
	return IO{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
}

// Has reports whether name is a client command.
func Has(name string) bool { return clientCommands[name] != nil }

// Names lists the client commands.
func Names() []string {
	names := make([]string, 0, len(clientCommands))
	for name := range clientCommands {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// clientCommand runs one client subcommand with its arguments.
type clientCommand struct {
	usage string // argument synopsis
	help  string // one line
	run   func(ctx context.Context, c *client, fs *flag.FlagSet, args []string) error
	flags func(fs *flag.FlagSet) // the command's own flags; may be nil
}

// clientCommands are the subcommands that talk to a running server. Each
// call builds the command afresh, so that its flag values start from their
// defaults.
var clientCommands = map[string]func() *clientCommand{
	"submit": submitCommand,
	"status": func() *clientCommand { return &clientCommand{usage: "ID", help: "show a job's status", run: statusCmd} },
	"result": resultCommand,
	"cancel": func() *clientCommand {
		return &clientCommand{usage: "ID", help: "cancel a queued or running job", run: cancelCmd}
	},
	"ps": func() *clientCommand {
		return &clientCommand{help: "list loaded models: state, VRAM, slots, idle time", run: psCmd}
	},
	"models": func() *clientCommand { return &clientCommand{help: "list configured models", run: modelsCmd} },
	"load":   func() *clientCommand { return loadCommand(true) },
	"unload": func() *clientCommand { return loadCommand(false) },
}

// usageError is a wrong command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// exitError carries an exit status other than 1 (130 after an interrupt).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Main runs the client subcommand name and returns the exit status:
// 0, 1 for any failure (one line on stderr), 2 for a usage error.
func Main(name string, args []string, cio IO) int {
	cmd := clientCommands[name]()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(cio.stderr)
	urlFlag := fs.String("url", "", "server address (default $"+EnvURL+", else "+defaultURL+")")
	jsonOut := fs.Bool("json", false, "print the server's JSON instead of text")
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vramcram %s [flags] %s\n  %s\n\nflags:\n", name, cmd.usage, cmd.help)
		fs.PrintDefaults()
		fmt.Fprintf(fs.Output(), "\nThe API key, if the server needs one, comes from $%s.\n", EnvAPIKey)
	}
	pos, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2 // the flag package has printed the problem and the usage
	}
	c, err := newClient(*urlFlag, cio)
	if err == nil {
		c.json = *jsonOut
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = cmd.run(ctx, c, fs, pos)
	}
	return reportError(name, err, cio.stderr)
}

func reportError(name string, err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "vramcram %s: %v\n", name, err)
	var ue *usageError
	var ee *exitError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "run 'vramcram %s -h' for usage\n", name)
		return 2
	case errors.As(err, &ee):
		return ee.code
	}
	return 1
}

// parseArgs parses flags that may come before, between or after the
// positional arguments ("status ID --json"), which the flag package alone
// does not allow. Everything after "--" is positional.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// client talks to a VramCram server.
type client struct {
	base   string // scheme://host:port, no trailing slash
	key    string
	json   bool
	http   *http.Client // plain requests
	stream *http.Client // the event stream: no overall timeout
	IO
}

func newClient(rawURL string, cio IO) (*client, error) {
	if rawURL == "" {
		rawURL = cio.getenv(EnvURL)
	}
	if rawURL == "" {
		rawURL = defaultURL
	}
	if !strings.Contains(rawURL, "://") {
		rawURL = "http://" + rawURL
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, usagef("--url %q: want http://HOST:PORT", rawURL)
	}
	return &client{
		base: strings.TrimRight(u.String(), "/"), key: strings.TrimSpace(cio.getenv(EnvAPIKey)), // a stray newline from a file or heredoc
		http:   &http.Client{Timeout: 30 * time.Second},
		stream: &http.Client{},
		IO:     cio,
	}, nil
}

// apiError is an error answer of the server.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("server answered %d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("%s (%s)", e.Message, e.Code)
}

// request builds a request to path with an optional JSON body.
func (c *client) request(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	return req, nil
}

// send performs req and returns the response, or an error naming the server
// when it cannot be reached.
func (c *client) send(hc *http.Client, req *http.Request) (*http.Response, error) {
	resp, err := hc.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, fmt.Errorf("cannot reach VramCram at %s (set --url or %s): %w", c.base, EnvURL, unwrapURLError(err))
	}
	return resp, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// do sends a request and returns the raw body of a 2xx answer; other answers
// become an *apiError.
func (c *client) do(ctx context.Context, method, path string, body any) ([]byte, error) {
	req, err := c.request(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(c.http, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, decodeAPIError(resp.StatusCode, b)
	}
	return b, nil
}

func decodeAPIError(status int, b []byte) error {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
		return &apiError{Status: status, Code: e.Error.Code, Message: e.Error.Message}
	}
	msg := strings.TrimSpace(string(b))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &apiError{Status: status, Message: msg}
}

// getJSON GETs path and decodes the answer into out.
func (c *client) getJSON(ctx context.Context, path string, out any) ([]byte, error) {
	b, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("GET %s: unexpected answer: %w", path, err)
	}
	return b, nil
}

// printJSON writes a server answer as it came, ending in a newline.
func (c *client) printJSON(b []byte) {
	c.stdout.Write(bytes.TrimRight(b, "\n"))
	fmt.Fprintln(c.stdout)
}

// oneArg checks that exactly one positional argument (what) was given.
func oneArg(args []string, what string) (string, error) {
	if len(args) != 1 {
		return "", usagef("want one argument, %s; got %d", what, len(args))
	}
	return args[0], nil
}

// Usage lists the client commands for the top-level usage text.
func Usage(w io.Writer) {
	for _, name := range []string{"submit", "status", "result", "cancel", "ps", "models", "load", "unload", "batch", "logs"} {
		cmd := clientCommands[name]()
		fmt.Fprintf(w, "  vramcram %-33s %s\n", name+" "+cmd.usage, cmd.help)
	}
}
