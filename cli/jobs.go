package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/vramcram/vramcram/api/wire"
)

func jobPath(id string) string { return "/jobs/" + url.PathEscape(id) }

func (c *client) job(ctx context.Context, id string) (wire.Job, []byte, error) {
	var j wire.Job
	b, err := c.getJSON(ctx, jobPath(id), &j)
	return j, b, err
}

// submitOpts are the flags of submit.
type submitOpts struct {
	model, params, output string
	priority, maxTokens   int
	wait, quiet           bool
	stream                optBool
	timeout               time.Duration
}

func submitCommand() *clientCommand {
	o := &submitOpts{}
	return &clientCommand{
		usage: "-m MODEL [--wait] PROMPT…",
		help:  "submit a job; PROMPT '-' (or none, with input piped) reads standard input",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&o.model, "m", "", "model name (required)")
			fs.StringVar(&o.model, "model", "", "same as -m")
			fs.IntVar(&o.priority, "priority", 0, "priority −100…100; higher runs first")
			fs.StringVar(&o.params, "params", "", `engine parameters as a JSON object, e.g. '{"temperature":0.2}'`)
			fs.IntVar(&o.maxTokens, "max-tokens", 0, "LLM: most tokens to generate (sets params.max_tokens)")
			fs.BoolVar(&o.wait, "wait", false, "follow the job: queue position, model loading, tokens or steps, then the result")
			fs.StringVar(&o.output, "o", "", "image jobs with --wait: file to write (default JOB_ID.png; -N before the extension for several)")
			fs.Var(&o.stream, "stream", "with --wait: print LLM text as it is generated (default: when stdout is a terminal)")
			fs.BoolVar(&o.quiet, "q", false, "with --wait: no progress lines on stderr, only the result")
			fs.DurationVar(&o.timeout, "timeout", 0, "with --wait: give up waiting this long after the job is accepted (the job keeps running); 0 = no limit")
		},
		run: func(ctx context.Context, c *client, _ *flag.FlagSet, args []string) error {
			return submitCmd(ctx, c, o, args)
		},
	}
}

// buildSubmit assembles the POST /jobs body from the flags and arguments.
func buildSubmit(c *client, o *submitOpts, args []string) (map[string]any, error) {
	if o.model == "" {
		return nil, usagef("-m MODEL is required")
	}
	prompt, err := readPrompt(c.stdin, args)
	if err != nil {
		return nil, err
	}
	body := map[string]any{"model": o.model, "prompt": prompt}
	if o.priority != 0 {
		body["priority"] = o.priority
	}
	params := map[string]any{}
	if o.params != "" {
		if err := json.Unmarshal([]byte(o.params), &params); err != nil || params == nil {
			return nil, usagef("--params: want a JSON object: %v", err)
		}
	}
	if o.maxTokens != 0 {
		params["max_tokens"] = o.maxTokens
	}
	if len(params) > 0 {
		body["params"] = params
	}
	return body, nil
}

// readPrompt joins the arguments, or reads stdin for "-" or no arguments.
func readPrompt(stdin io.Reader, args []string) (string, error) {
	if len(args) == 1 && args[0] == "-" || len(args) == 0 {
		if len(args) == 0 && isTerminal(stdin) {
			return "", usagef("PROMPT is required (as arguments, or '-' to read standard input)")
		}
		if stdin == nil {
			return "", usagef("PROMPT is required")
		}
		b, err := io.ReadAll(io.LimitReader(stdin, 64<<20))
		if err != nil {
			return "", fmt.Errorf("read prompt from standard input: %w", err)
		}
		p := strings.TrimRight(string(b), "\n")
		if strings.TrimSpace(p) == "" {
			return "", usagef("the prompt read from standard input is empty")
		}
		return p, nil
	}
	return strings.Join(args, " "), nil
}

func isTerminal(r any) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func submitCmd(ctx context.Context, c *client, o *submitOpts, args []string) error {
	body, err := buildSubmit(c, o, args)
	if err != nil {
		return err
	}
	if !o.wait {
		b, err := c.do(ctx, http.MethodPost, "/jobs", body)
		if err != nil {
			return err
		}
		if c.json {
			c.printJSON(b)
			return nil
		}
		var out wire.Accepted
		if err := json.Unmarshal(b, &out); err != nil || out.JobID == "" {
			return fmt.Errorf("unexpected answer to POST /jobs: %s", b)
		}
		fmt.Fprintln(c.stdout, out.JobID)
		return nil
	}
	return c.submitAndWait(ctx, o, body)
}

func statusCmd(ctx context.Context, c *client, _ *flag.FlagSet, args []string) error {
	id, err := oneArg(args, "the job ID")
	if err != nil {
		return err
	}
	j, raw, err := c.job(ctx, id)
	if err != nil {
		return err
	}
	if c.json {
		c.printJSON(raw)
		return nil
	}
	printJob(c.stdout, j, time.Now())
	return nil
}

// printJob writes a job's status as aligned lines.
func printJob(w io.Writer, j wire.Job, now time.Time) {
	line := func(k, v string) { fmt.Fprintf(w, "%-9s %s\n", k, v) }
	line("job", j.JobID)
	st := j.Status
	switch {
	case j.Status == "queued" && j.QueuePosition != nil:
		st += fmt.Sprintf(" (position %d in %s's queue%s)", *j.QueuePosition, j.Model, etaText(j.ETASeconds))
	case j.MaxAttempts > 0:
		st += fmt.Sprintf(" (attempt %d of %d)", j.Attempts, j.MaxAttempts)
	}
	line("status", st)
	line("model", fmt.Sprintf("%s (%s), priority %d", j.Model, j.Type, j.Priority))
	line("created", stamp(j.CreatedAt, now))
	if j.StartedAt != nil {
		line("started", stamp(*j.StartedAt, now))
	}
	if j.FinishedAt != nil {
		line("finished", stamp(*j.FinishedAt, now))
	}
	if p := j.Progress; p != nil {
		if p.Steps > 0 {
			line("progress", fmt.Sprintf("step %d of %d", p.Step, p.Steps))
		} else {
			line("progress", fmt.Sprintf("%d tokens", p.Tokens))
		}
	}
	if j.Error != "" {
		line("error", j.Error)
	}
}

func stamp(t, now time.Time) string {
	return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.DateTime), ago(now.Sub(t)))
}

// ago rounds d for people: 850ms, 12s, 3m4s, 2h5m.
func ago(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return strings.TrimSuffix(d.Round(time.Second).String(), "0s")
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}

func resultCommand() *clientCommand {
	var output string
	return &clientCommand{
		usage: "ID",
		help:  "print a completed job's text, or write its images to files",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&output, "o", "", "image jobs: file to write (default JOB_ID.png; -N before the extension for several)")
		},
		run: func(ctx context.Context, c *client, _ *flag.FlagSet, args []string) error {
			id, err := oneArg(args, "the job ID")
			if err != nil {
				return err
			}
			return c.printResult(ctx, id, output, "")
		},
	}
}

// printResult fetches a completed job's result. Text goes to stdout, minus
// the prefix already streamed there; images are written to files, whose
// names go to stdout.
func (c *client) printResult(ctx context.Context, id, output, streamed string) error {
	b, err := c.do(ctx, http.MethodGet, jobPath(id)+"/result", nil)
	if err != nil {
		return err
	}
	if c.json {
		c.printJSON(b)
		return nil
	}
	var res struct {
		Type   string       `json:"type"`
		Text   string       `json:"text"`
		Images []imageEntry `json:"images"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("unexpected result document: %w", err)
	}
	switch res.Type {
	case "llm":
		c.printText(res.Text, streamed)
		return nil
	case "diffusion":
		paths, err := saveImages(res.Images, output, id)
		for _, p := range paths {
			fmt.Fprintln(c.stdout, p)
		}
		return err
	}
	c.printJSON(b) // a result type this client does not know: show it whole
	return nil
}

// printText ends the text on stdout: the part not yet streamed there, or,
// when what was streamed is not the start of the result (events were lost),
// the whole result on a new line.
func (c *client) printText(text, streamed string) {
	switch {
	case streamed == "":
		fmt.Fprintln(c.stdout, text)
	case strings.HasPrefix(text, streamed):
		fmt.Fprintln(c.stdout, text[len(streamed):])
	default:
		fmt.Fprintln(c.stdout)
		fmt.Fprintln(c.stderr, "(some streamed text was lost; the whole result follows)")
		fmt.Fprintln(c.stdout, text)
	}
}

func cancelCmd(ctx context.Context, c *client, _ *flag.FlagSet, args []string) error {
	id, err := oneArg(args, "the job ID")
	if err != nil {
		return err
	}
	b, err := c.do(ctx, http.MethodDelete, jobPath(id), nil)
	if err != nil {
		return err
	}
	if c.json {
		c.printJSON(b)
		return nil
	}
	var out wire.Cancelled
	_ = json.Unmarshal(b, &out)
	fmt.Fprintf(c.stdout, "cancelled %s (was %s)\n", id, out.PreviousStatus)
	return nil
}
