package engine

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

type stubLauncher struct {
	launched []string
	routes   []string
}

func (l *stubLauncher) Check(s Spec) error { return nil }
func (l *stubLauncher) Launch(_ context.Context, s Spec) (Engine, error) {
	l.launched = append(l.launched, s.Model)
	return nil, errors.New("stub")
}

type routingLauncher struct{ stubLauncher }

func (l *routingLauncher) Routes(model string) []string { return l.routes }

func TestRegistry(t *testing.T) {
	t.Parallel()
	r := NewRegistry()
	a, b := &stubLauncher{}, &routingLauncher{stubLauncher{routes: []string{"/v1/x"}}}
	if err := r.Register("a", a); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("b", b); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("a", b); err == nil {
		t.Fatal("a name registered twice")
	}
	if err := r.Register("", a); err == nil {
		t.Fatal("empty name registered")
	}
	_, _ = r.Launch(context.Background(), Spec{Model: "m1", Engine: "b"})
	if len(a.launched) != 0 || !slices.Equal(b.launched, []string{"m1"}) {
		t.Fatalf("launched a %v b %v", a.launched, b.launched)
	}
	if err := r.Check(Spec{Model: "m2", Engine: "nope"}); err == nil || !strings.Contains(err.Error(), `no engine "nope" (registered: [a b])`) {
		t.Fatalf("unknown engine: %v", err)
	}
	if got := r.Routes("b", "m1"); !slices.Equal(got, []string{"/v1/x"}) || r.Routes("a", "m1") != nil || r.Routes("nope", "m") != nil {
		t.Fatalf("routes %v", got)
	}
}

func TestSpec_Devices(t *testing.T) {
	t.Parallel()
	if s := (Spec{Devices: []string{""}}); s.GPUs() != "" || s.DeviceEnv() != nil {
		t.Fatalf("unnamed default device: %q %v", s.GPUs(), s.DeviceEnv())
	}
	s := Spec{Devices: []string{"GPU-b", "GPU-a"}}
	if s.GPUs() != "GPU-b,GPU-a" || !slices.Equal(s.DeviceEnv(), []string{"CUDA_VISIBLE_DEVICES=GPU-b,GPU-a"}) {
		t.Fatalf("%q %v", s.GPUs(), s.DeviceEnv())
	}
}

func TestKind(t *testing.T) {
	t.Parallel()
	for _, k := range Kinds() {
		if !k.Valid() {
			t.Errorf("%s not valid", k)
		}
	}
	if Kind("video").Valid() {
		t.Error("unknown kind valid")
	}
}
