package api

import (
	"encoding/json"
	"testing"

	"github.com/vramcram/vramcram/api/wire"
	"github.com/vramcram/vramcram/store"
)

// The hand-written answer of POST /jobs is the JSON of wire.Accepted, which
// the CLI reads.
func TestAcceptedBody_IsWireAccepted(t *testing.T) {
	t.Parallel()
	want, err := json.Marshal(wire.Accepted{JobID: "0mabc123xyz", Status: string(store.JobStateQueued)})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(acceptedBody("0mabc123xyz")); got != string(want)+"\n" {
		t.Fatalf("acceptedBody %q, wire.Accepted %q", got, want)
	}
}
