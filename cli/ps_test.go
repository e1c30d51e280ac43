package cli

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vramcram/vramcram/api/wire"
)

func TestPrintPS_GPUs(t *testing.T) {
	var l wire.ModelList
	body := `{"models":[
	  {"name":"split","state":"ready","vram_reserved_mb":9000,"slots":1,"pid":42,"placement":[{"device":0,"vram_mb":4500},{"device":1,"vram_mb":4500}]},
	  {"name":"small","state":"busy","vram_reserved_mb":2000,"vram_measured_mb":2100,"tokens_per_second":41.25,"slots":2,"running":1,"pid":43,"placement":[{"device":1,"vram_mb":2000}]},
	  {"name":"idle","state":"unloaded","slots":1}],
	 "vram_budget_mb":18000,"vram_reserved_mb":11000,"vram_free_mb":7000,
	 "devices":[{"index":0,"id":"GPU-a","vram_budget_mb":9000,"vram_reserved_mb":4500,"vram_free_mb":4500},
	            {"index":1,"id":"GPU-b","vram_budget_mb":9000,"vram_reserved_mb":6500,"vram_not_ours_mb":300,"vram_free_mb":2200,"lost":""}]}`
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printPS(&out, l, time.Now())
	text := out.String()
	for _, re := range []string{
		`(?m)^split\s+ready\s+0\+1\s+9000 MiB\s+-\s+0/1`,
		`(?m)^small\s+busy\s+1\s+2000 MiB\s+2100 MiB\s+1/2\s+41\.2\s`,
		`(?m)^split\s+ready\s+0\+1\s+9000 MiB\s+-\s+0/1\s+-\s`,
		`(?m)^  GPU 1 \(GPU-b\): 6500 of 9000 MiB reserved, 300 MiB not ours, 2200 MiB free$`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("ps output does not match %s:\n%s", re, text)
		}
	}
	if strings.Contains(text, "idle") {
		t.Errorf("an unloaded model is listed:\n%s", text)
	}
}

func TestPrintJob_QueuedWithETA(t *testing.T) {
	pos, eta := 2, 7.25
	var out bytes.Buffer
	printJob(&out, wire.Job{JobID: "j1", Status: "queued", Model: "llama", QueuePosition: &pos, ETASeconds: &eta}, time.Now())
	if !strings.Contains(out.String(), "queued (position 2 in llama's queue, done in about 7.2s)") &&
		!strings.Contains(out.String(), "queued (position 2 in llama's queue, done in about 7.3s)") {
		t.Fatalf("status lines:\n%s", out.String())
	}
	out.Reset()
	printJob(&out, wire.Job{JobID: "j2", Status: "queued", Model: "llama", QueuePosition: &pos}, time.Now())
	if strings.Contains(out.String(), "done in") {
		t.Fatalf("an ETA without one from the server:\n%s", out.String())
	}
}
