package e2e

// Checks on the documentation: the README stays a front door, every config
// example in README.md and docs/*.md loads with LoadConfig, and every relative
// link (file and #anchor) points at something that exists.
//
// Markers, as HTML comments on the last non-blank line before a fenced block:
//
//	<!-- not-a-config -->            a YAML block that is not a VramCram config
//	<!-- config: pending REASON -->  a config that needs keys not on this branch yet
//
// Both are skipped. A YAML block with neither is loaded onto the defaults, as a
// file passed with -config would be; so is the body of a shell heredoc written
// to a *.yaml file (cat > x.yaml <<'EOF' … EOF).

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/vramcram/vramcram/config"
)

// readmeMaxBytes is issue 14's limit for README.md (15 KB).
const readmeMaxBytes = 15 * 1024

// docPendingLinkTargets are files that other branches add; a link to one is not
// an error while it is missing. Remove an entry once its branch is merged.
var docPendingLinkTargets = map[string]bool{}

// docFiles returns README.md and docs/*.md, relative to the repository root.
func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"README.md"}, files...)
}

func TestDocs_ReadmeSize(t *testing.T) {
	t.Parallel()
	info, err := os.Stat("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() > readmeMaxBytes {
		t.Errorf("README.md is %d bytes, more than %d: move reference material to docs/", info.Size(), readmeMaxBytes)
	}
}

// docBlock is one fenced code block of a markdown file.
type docBlock struct {
	line   int    // 1-based line of the opening fence
	lang   string // the info string's first word, lower case
	marker string // the HTML comment just before the fence, if any
	body   string
}

var docFenceOpen = regexp.MustCompile("^\\s*(```+|~~~+)\\s*([^\\s`]*)")

// docFencedBlocks splits markdown into its fenced code blocks.
func docFencedBlocks(md string) []docBlock {
	var (
		blocks   []docBlock
		cur      *docBlock
		fence    string
		body     []string
		lastText string // last non-blank line outside blocks
	)
	for i, line := range strings.Split(md, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur != nil {
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "" {
				cur.body = strings.Join(body, "\n") + "\n"
				blocks = append(blocks, *cur)
				cur, body = nil, nil
				lastText = ""
				continue
			}
			body = append(body, line)
			continue
		}
		if m := docFenceOpen.FindStringSubmatch(line); m != nil {
			cur = &docBlock{line: i + 1, lang: strings.ToLower(m[2])}
			if strings.HasPrefix(lastText, "<!--") {
				cur.marker = lastText
			}
			fence = m[1]
			continue
		}
		if trimmed != "" {
			lastText = trimmed
		}
	}
	return blocks
}

// docHeredocYAML finds `… > NAME.yaml <<'TAG'` heredocs in a shell block and
// returns their bodies.
var docHeredocStart = regexp.MustCompile(`>\s*\S+\.ya?ml\s*<<-?\s*['"]?(\w+)['"]?`)

func docHeredocYAML(sh string) []string {
	var out []string
	lines := strings.Split(sh, "\n")
	for i := 0; i < len(lines); i++ {
		m := docHeredocStart.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != m[1]; i++ {
			body = append(body, lines[i])
		}
		out = append(out, strings.Join(body, "\n")+"\n")
	}
	return out
}

// docConfig is one config example found in a markdown file.
type docConfig struct {
	where string // file:line
	yaml  string
}

// docConfigs returns the config examples of a markdown text, and the blocks
// skipped by a pending-config marker (for the log).
func docConfigs(name, md string) (configs []docConfig, pending []string) {
	for _, b := range docFencedBlocks(md) {
		where := fmt.Sprintf("%s:%d", name, b.line)
		switch {
		case strings.Contains(b.marker, "not-a-config"):
			continue
		case strings.HasPrefix(b.marker, "<!-- config: pending"):
			if b.lang == "yaml" || b.lang == "yml" || len(docHeredocYAML(b.body)) > 0 {
				pending = append(pending, where+" "+b.marker)
			}
			continue
		}
		switch b.lang {
		case "yaml", "yml":
			configs = append(configs, docConfig{where, b.body})
		case "sh", "bash", "shell", "console":
			for _, y := range docHeredocYAML(b.body) {
				configs = append(configs, docConfig{where + " (heredoc)", y})
			}
		}
	}
	return configs, pending
}

// checkDocConfig loads one example onto the defaults, as -config would.
func checkDocConfig(dir, yaml string) error {
	f, err := os.CreateTemp(dir, "doc-*.yaml")
	if err != nil {
		return err
	}
	if _, err := f.WriteString(yaml); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	_, err = config.Load(f.Name(), nil)
	return err
}

func TestDocs_ConfigExamples(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	total := 0
	for _, name := range docFiles(t) {
		md, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		configs, pending := docConfigs(name, string(md))
		for _, p := range pending {
			t.Logf("skipped (pending): %s", p)
		}
		for _, c := range configs {
			total++
			if err := checkDocConfig(dir, c.yaml); err != nil {
				t.Errorf("%s: config example does not load:\n%v", c.where, err)
			}
		}
	}
	if total == 0 {
		t.Fatal("no config examples found in README.md and docs/*.md")
	}
}

// TestDocs_ConfigCheckCatchesMistakes makes sure the check above can fail: an
// example with a misspelt key, one with an invalid value and one inside a
// heredoc are all reported, and the markers skip what they say.
func TestDocs_ConfigCheckCatchesMistakes(t *testing.T) {
	t.Parallel()
	md := "# Example\n\n```yaml\nserver: {hots: 0.0.0.0}\n```\n\n" +
		"```yaml\nscheduling:\n  policy: lifo\n```\n\n" +
		"```sh\ncat > /tmp/x/config.yaml <<'EOF'\nvram: {total_mb: 1000, safety_margin_mb: 2000}\nEOF\n```\n\n" +
		"<!-- not-a-config -->\n```yaml\nscrape_configs: []\n```\n\n" +
		"<!-- config: pending engine refactor -->\n```yaml\nmodels: {llm: [{name: a, model_path: x, config: {engine: command}}]}\n```\n\n" +
		"```yaml\nstorage: {data_dir: /tmp/x}\n```\n"
	configs, pending := docConfigs("example.md", md)
	if len(configs) != 4 || len(pending) != 1 {
		t.Fatalf("found %d configs and %d pending, want 4 and 1: %+v %q", len(configs), len(pending), configs, pending)
	}
	dir := t.TempDir()
	wantErr := []string{"server.hots: unknown key", "scheduling.policy", "vram.safety_margin_mb", ""}
	for i, c := range configs {
		err := checkDocConfig(dir, c.yaml)
		switch {
		case wantErr[i] == "" && err != nil:
			t.Errorf("%s: unexpected error %v", c.where, err)
		case wantErr[i] != "" && (err == nil || !strings.Contains(err.Error(), wantErr[i])):
			t.Errorf("%s: error %v, want one naming %q", c.where, err, wantErr[i])
		}
	}
}

var (
	docMDLink      = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	docMDHeading   = regexp.MustCompile(`^(#{1,6})\s+(.*?)\s*#*\s*$`)
	docInlineCode  = regexp.MustCompile("`[^`]*`")
	docHTMLComment = regexp.MustCompile(`<!--.*?-->`)
	docLinkText    = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
)

// docProseLine is a markdown line outside fenced blocks.
type docProseLine struct {
	n    int // 1-based
	text string
}

// docProseLines returns the lines of md outside fenced blocks.
func docProseLines(md string) []docProseLine {
	var out []docProseLine
	fence := ""
	for i, line := range strings.Split(md, "\n") {
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "" {
				fence = ""
			}
			continue
		}
		if m := docFenceOpen.FindStringSubmatch(line); m != nil {
			fence = m[1]
			continue
		}
		out = append(out, docProseLine{i + 1, line})
	}
	return out
}

// docSlug is GitHub's anchor for a heading: lower case, punctuation dropped,
// spaces turned into hyphens.
func docSlug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// docAnchors returns the heading anchors of a markdown text, duplicates numbered
// as GitHub numbers them (name, name-1, …).
func docAnchors(md string) map[string]bool {
	out := map[string]bool{}
	count := map[string]int{}
	for _, l := range docProseLines(md) {
		m := docMDHeading.FindStringSubmatch(l.text)
		if m == nil {
			continue
		}
		text := strings.NewReplacer("`", "", "*", "").Replace(m[2])
		text = docLinkText.ReplaceAllString(text, "$1")
		s := docSlug(text)
		if n := count[s]; n > 0 {
			out[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			out[s] = true
		}
		count[s]++
	}
	return out
}

// docBrokenLinks lists the relative links of the markdown file name (its text
// md) whose file or anchor does not exist. read returns another file's text.
func docBrokenLinks(name, md string, read func(string) (string, error)) []string {
	var broken []string
	for _, l := range docProseLines(md) {
		line := docHTMLComment.ReplaceAllString(docInlineCode.ReplaceAllString(l.text, ""), "")
		for _, m := range docMDLink.FindAllStringSubmatch(line, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			path := name
			if file != "" {
				path = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(name), file)))
			}
			where := fmt.Sprintf("%s:%d: %s", name, l.n, target)
			text := md
			if path != name {
				var err error
				if text, err = read(path); err != nil {
					if !docPendingLinkTargets[path] {
						broken = append(broken, where+": "+err.Error())
					}
					continue
				}
			}
			if anchor != "" && strings.HasSuffix(path, ".md") && !docAnchors(text)[anchor] {
				broken = append(broken, where+": no heading with anchor #"+anchor+" in "+path)
			}
		}
	}
	return broken
}

// readDocTarget reads a link target: a file's text, "" for a directory.
func readDocTarget(path string) (string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if info.IsDir() {
		return "", nil
	}
	b, err := os.ReadFile(path)
	return string(b), err
}

func TestDocs_Links(t *testing.T) {
	t.Parallel()
	checked := 0
	for _, name := range docFiles(t) {
		md, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, b := range docBrokenLinks(name, string(md), readDocTarget) {
			t.Error("broken link " + b)
		}
	}
	if checked < 2 {
		t.Fatalf("checked %d markdown files, want README.md and docs/*.md", checked)
	}
}

// TestDocs_LinkCheckCatchesMistakes makes sure the link check can fail: a
// missing file and a missing anchor are reported; good links, links in code
// and external links are not.
func TestDocs_LinkCheckCatchesMistakes(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"docs/a.md": "# A\n\n## GET /jobs/{id}\n\n## Same\n\n## Same\n",
	}
	read := func(p string) (string, error) {
		if s, ok := files[p]; ok {
			return s, nil
		}
		return "", os.ErrNotExist
	}
	md := "# R\n\n## Local `heading`\n\n" +
		"[ok](docs/a.md) [ok](docs/a.md#get-jobsid) [ok](docs/a.md#same-1) [ok](#local-heading) " +
		"[ext](https://example.com/x.md) `[code](missing.md)`\n\n" +
		"```\n[in a block](missing.md)\n```\n\n" +
		"[bad](docs/missing.md) [bad](docs/a.md#nope) [bad](#nowhere)\n"
	got := docBrokenLinks("README.md", md, read)
	if len(got) != 3 {
		t.Fatalf("broken = %q, want the 3 links marked bad", got)
	}
	for i, want := range []string{"docs/missing.md", "#nope", "#nowhere"} {
		if !strings.Contains(got[i], want) {
			t.Errorf("broken[%d] = %q, want it to name %q", i, got[i], want)
		}
	}
}
