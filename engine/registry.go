package engine

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Registry maps engine names ("llama-server", "sd-cli", "command", …) to their
// Launchers. It is itself a Launcher: it starts each Spec with the Launcher
// registered under Spec.Engine. Safe for concurrent use.
type Registry struct {
	mu        sync.RWMutex
	launchers map[string]Launcher
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry { return &Registry{launchers: map[string]Launcher{}} }

// Register makes l the Launcher of engine name. It returns an error when the
// name is empty or already taken.
func (r *Registry) Register(name string, l Launcher) error {
	if name == "" || l == nil {
		return fmt.Errorf("register engine %q: empty name or nil launcher", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.launchers[name]; ok {
		return fmt.Errorf("register engine %q: already registered", name)
	}
	r.launchers[name] = l
	return nil
}

// Lookup returns the Launcher of engine name.
func (r *Registry) Lookup(name string) (Launcher, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	l, ok := r.launchers[name]
	return l, ok
}

// Names lists the registered engines, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.launchers))
	for n := range r.launchers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (r *Registry) launcher(s Spec) (Launcher, error) {
	l, ok := r.Lookup(s.Engine)
	if !ok {
		return nil, fmt.Errorf("model %s: no engine %q (registered: %v)", s.Model, s.Engine, r.Names())
	}
	return l, nil
}

// Check asks the Launcher of s.Engine whether s can start.
func (r *Registry) Check(s Spec) error {
	l, err := r.launcher(s)
	if err != nil {
		return err
	}
	return l.Check(s)
}

// Launch starts s with the Launcher of s.Engine.
func (r *Registry) Launch(ctx context.Context, s Spec) (Engine, error) {
	l, err := r.launcher(s)
	if err != nil {
		return nil, err
	}
	return l.Launch(ctx, s)
}

// Routes returns the OpenAI paths that model, run by engine name, serves:
// nil when its Launcher is no RouteLister.
func (r *Registry) Routes(name, model string) []string {
	l, ok := r.Lookup(name)
	if !ok {
		return nil
	}
	if rl, ok := l.(RouteLister); ok {
		return rl.Routes(model)
	}
	return nil
}
