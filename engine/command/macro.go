package command

import (
	"fmt"
	"strings"
)

// Macros a cmd template (and env values) may use.
const (
	MacroPort        = "PORT"         // the loopback port VramCram picked for the engine
	MacroHost        = "HOST"         // 127.0.0.1
	MacroModelPath   = "MODEL_PATH"   // model_path
	MacroModelName   = "MODEL_NAME"   // the model's name
	MacroGPUs        = "GPUS"         // what CUDA_VISIBLE_DEVICES gets ("" when unconfined)
	MacroContextSize = "CONTEXT_SIZE" // config.context_size
)

// Macros lists every macro name, as ${NAME} takes it.
func Macros() []string {
	return []string{MacroPort, MacroHost, MacroModelPath, MacroModelName, MacroGPUs, MacroContextSize}
}

// MacroError is a template that uses an unknown or unterminated macro.
type MacroError struct {
	Macro string // "${FOO}", or the unterminated rest
	Msg   string
}

func (e *MacroError) Error() string { return e.Macro + ": " + e.Msg }

// CheckTemplate reports the first unknown or unterminated macro of s.
func CheckTemplate(s string) error {
	_, err := expand(s, nil)
	return err
}

// UsesMacro reports whether s contains ${name}.
func UsesMacro(s, name string) bool { return strings.Contains(s, "${"+name+"}") }

// Expand replaces every ${NAME} of s by vars[NAME]. A "$" not followed by
// "{" stays as it is. Errors are *MacroError.
func Expand(s string, vars map[string]string) (string, error) {
	if vars == nil {
		vars = map[string]string{}
	}
	return expand(s, vars)
}

// expand does Expand; with vars nil it only checks the names.
func expand(s string, vars map[string]string) (string, error) {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", &MacroError{Macro: s[i:], Msg: "unterminated macro (missing '}')"}
		}
		name := s[i+2 : i+end]
		if !known(name) {
			return "", &MacroError{Macro: "${" + name + "}", Msg: fmt.Sprintf("unknown macro; known: ${%s}", strings.Join(Macros(), "}, ${"))}
		}
		if vars != nil {
			b.WriteString(vars[name])
		}
		s = s[i+end+1:]
	}
}

func known(name string) bool {
	for _, m := range Macros() {
		if m == name {
			return true
		}
	}
	return false
}
