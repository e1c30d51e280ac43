package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vramcram/vramcram/config"

	"github.com/vramcram/vramcram/engine/llamacpp"
	"github.com/vramcram/vramcram/scheduler"
	"github.com/vramcram/vramcram/store"
)

// storeFile is the bbolt file under storage.data_dir.
const storeFile = "vramcram.db"

// learnKey names a model's learned VRAM figure in the store: its name and a
// hash of what decides its memory (file and engine options) and of vram_mb,
// so that a changed configuration, or a new vram_mb, starts over from the
// configured or estimated figure.
func learnKey(cfg *config.Config, name string) string {
	var spec string
	if m, ok := cfg.LLMByName(name); ok {
		spec = fmt.Sprintf("llm|%s|%d|%s", m.ModelPath, m.VRAMMB, specOf(m.Config, "Engine", llamacpp.Name))
	} else if m, ok := cfg.DiffusionByName(name); ok {
		spec = fmt.Sprintf("diffusion|%s|%d|%s", m.ModelPath, m.VRAMMB, specOf(m.Config, "Cmd", ""))
	}
	sum := sha256.Sum256([]byte(spec))
	return name + "@" + hex.EncodeToString(sum[:6])
}

// specOf formats an engine config struct as %+v does, without its fields
// from the one named added on (keys added with the engine registry), so
// that a configuration written before them keeps its learned figures. Those
// fields are appended when set, except a default engine name.
func specOf(c any, added, defaultEngine string) string {
	v := reflect.ValueOf(c)
	t := v.Type()
	var b, extra strings.Builder
	b.WriteString("{")
	late := false
	for i := range t.NumField() {
		f, name := v.Field(i), t.Field(i).Name
		late = late || name == added
		switch {
		case !late:
			if i > 0 {
				b.WriteString(" ")
			}
			fmt.Fprintf(&b, "%s:%+v", name, f.Interface())
		case f.IsZero(), name == "Engine" && f.String() == defaultEngine:
		default:
			fmt.Fprintf(&extra, "|%s:%+v", name, f.Interface())
		}
	}
	b.WriteString("}")
	return b.String() + extra.String()
}

// applyLearned sets each model's LearnKey and the figure learned on earlier
// runs.
func applyLearned(cfg *config.Config, models []scheduler.Model, learned map[string]int, log *slog.Logger) {
	for k := range models {
		m := &models[k]
		m.LearnKey = learnKey(cfg, m.Name)
		if mb := learned[m.LearnKey]; mb > 0 {
			m.LearnedMB = mb
			log.Info("VRAM learned on an earlier run", "model", m.Name, "vram_learned_mb", mb)
		}
	}
}

// checkCmd validates a config and prints, per model, its VRAM figures and
// whether it fits the budget alone. Exit 1 on an invalid config.
func checkCmd(args []string, stdout, stderr io.Writer) int {
	var co checkOpts
	cfg, code := configFromFlags("check", args, stderr, co.flags) // check_reload.go
	if cfg == nil {
		return code
	}
	if err := printCheck(context.Background(), cfg, stdout); err != nil {
		fmt.Fprintln(stderr, "vramcram check:", err)
		return 1
	}
	if co.url != "" {
		if err := printReloadDiff(context.Background(), cfg, co.url, os.Getenv, stdout); err != nil {
			fmt.Fprintln(stderr, "vramcram check:", err)
			return 1
		}
	}
	return 0
}

func printCheck(ctx context.Context, cfg *config.Config, w io.Writer) error {
	quiet := slog.New(slog.DiscardHandler)
	devs, source, err := openDevices(cfg, quiet)
	if err != nil {
		return err
	}
	defer closeDevices(devs, quiet)
	fmt.Fprintf(w, "config OK: %d LLM and %d diffusion models\n", len(cfg.Models.LLM), len(cfg.Models.Diffusion))
	var gpus []gpuRoom
	for k, d := range devs {
		r, err := d.Meter.Read(ctx)
		if err != nil {
			return fmt.Errorf("read GPU %s: %w", d.ID(), err)
		}
		g := gpuRoom{budget: r.TotalMB - cfg.VRAM.SafetyMarginMB, notOurs: r.NotOursMB(nil)}
		gpus = append(gpus, g)
		fmt.Fprintf(w, "GPU %d (%s%s): source %s, total %d MiB, free %d MiB, used by other processes %d MiB; budget %d MiB (safety margin %d MiB)\n",
			k, d.ID(), nameSuffix(d.Name), source, r.TotalMB, r.FreeMB, g.notOurs, g.budget, cfg.VRAM.SafetyMarginMB)
	}
	fmt.Fprintln(w)
	budget := 0
	for _, g := range gpus {
		budget = max(budget, g.budget)
	}

	models := schedulerConfig(cfg).Models
	var notes bytes.Buffer
	estimateModels(cfg, models, slog.New(slog.NewTextHandler(&notes, &slog.HandlerOptions{Level: slog.LevelWarn, ReplaceAttr: dropTime})))
	learned, lerr := store.ReadLearnedVRAM(filepath.Join(cfg.Storage.DataDir, storeFile), 200*time.Millisecond)
	applyLearned(cfg, models, learned, quiet)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tTYPE\tCONFIGURED\tESTIMATED\tLEARNED\tRESERVES\tFITS ALONE")
	for _, m := range models {
		need, from := reserves(m, budget)
		fits := fitsAlone(m, need, gpus)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d MiB (%s)\t%s\n", m.Name, m.Kind, mibOrDash(m.VRAMMB), mibOrDash(m.EstimateMB), mibOrDash(m.LearnedMB), need, from, fits)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	printPooling(cfg, w)
	if notes.Len() > 0 {
		fmt.Fprintf(w, "\nnotes:\n%s", notes.String())
	}
	if errors.Is(lerr, store.ErrLocked) {
		fmt.Fprintln(w, "\nlearned figures: the store is in use by a running server (see GET /models)")
	} else if lerr != nil {
		fmt.Fprintf(w, "\nlearned figures: %v\n", lerr)
	}
	return nil
}

// gpuRoom is one GPU's budget and the memory other processes hold on it.
type gpuRoom struct{ budget, notOurs int }

// fitsAlone says whether m fits its GPUs (any one GPU when it names none)
// with nothing else of ours loaded.
func fitsAlone(m scheduler.Model, need int, gpus []gpuRoom) string {
	devs := m.GPUs
	share := need
	if len(devs) > 0 {
		share = need / len(devs)
	} else {
		for k := range gpus {
			devs = append(devs, k)
		}
	}
	best := -1
	for _, d := range devs {
		if d >= len(gpus) {
			return fmt.Sprintf("NO: GPU %d does not exist", d)
		}
		if len(m.GPUs) > 0 { // a split needs every device
			if share > gpus[d].budget {
				return fmt.Sprintf("NO: needs %d MiB on GPU %d, budget %d MiB", share, d, gpus[d].budget)
			}
			best = max(best, 0)
			continue
		}
		best = max(best, gpus[d].budget)
	}
	if len(m.GPUs) == 0 && need > best {
		return fmt.Sprintf("NO: needs %d MiB, budget %d MiB", need, best)
	}
	for _, d := range devs {
		if share <= gpus[d].budget-gpus[d].notOurs {
			return "yes"
		}
	}
	return "not now: other processes hold the rest"
}

func nameSuffix(name string) string {
	if name == "" {
		return ""
	}
	return ", " + name
}

// reserves mirrors the scheduler's choice of a model's reservation.
func reserves(m scheduler.Model, budget int) (int, string) {
	switch {
	case m.LearnedMB > 0:
		return m.LearnedMB, "learned"
	case m.VRAMMB > 0:
		return m.VRAMMB, "configured"
	case m.EstimateMB > 0:
		return m.EstimateMB, "estimated"
	}
	return budget, "unknown: whole budget"
}

func mibOrDash(n int) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprintf("%d MiB", n)
}

// dropTime leaves the time out of the notes that check prints.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
