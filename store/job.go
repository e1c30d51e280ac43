package store

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// JobState is where a job is in its lifecycle; see the package doc for the
// state machine.
type JobState string

const (
	JobStateQueued    JobState = "queued"
	JobStateRunning   JobState = "running"
	JobStateCompleted JobState = "completed"
	JobStateFailed    JobState = "failed"
	JobStateCancelled JobState = "cancelled"
)

// JobStates lists every state in lifecycle order.
func JobStates() []JobState {
	return []JobState{JobStateQueued, JobStateRunning, JobStateCompleted, JobStateFailed, JobStateCancelled}
}

// Final reports whether s is a terminal state (completed, failed, cancelled):
// no transition leaves it.
func (s JobState) Final() bool {
	switch s {
	case JobStateCompleted, JobStateFailed, JobStateCancelled:
		return true
	}
	return false
}

// Valid reports whether s is one of JobStates.
func (s JobState) Valid() bool {
	switch s {
	case JobStateQueued, JobStateRunning, JobStateCompleted, JobStateFailed, JobStateCancelled:
		return true
	}
	return false
}

// Job is a unit of work. Field json names are part of the on-disk format.
//
// The caller of Enqueue writes ID, Model, Type, Prompt, Params (or Endpoint
// and Body), Priority and
// optionally MaxAttempts and CreatedAt; the store writes everything else.
type Job struct {
	ID          string          `json:"id"`
	Model       string          `json:"model"`
	Type        string          `json:"type"` // "llm" | "diffusion"
	Prompt      string          `json:"prompt"`
	Params      json.RawMessage `json:"params,omitempty"`
	Priority    int             `json:"priority"` // higher first; clamped to [MinPriority, MaxPriority]
	State       JobState        `json:"state"`
	Attempts    int             `json:"attempts"` // incremented by Claim, decremented by Release
	MaxAttempts int             `json:"max_attempts"`
	Error       string          `json:"error,omitempty"` // last failure reason (kept across a retry)
	Seq         uint64          `json:"seq"`             // arrival order, set by Enqueue, never reused
	CreatedAt   time.Time       `json:"created_at"`
	StartedAt   time.Time       `json:"started_at,omitzero"`  // last Claim; zero while queued
	FinishedAt  time.Time       `json:"finished_at,omitzero"` // set on entering a final state
	Endpoint    string          `json:"endpoint,omitempty"`   // an OpenAI path ("/v1/chat/completions"): Body is relayed there as is
	Body        json.RawMessage `json:"body,omitempty"`       // the request of an Endpoint job; Prompt and Params are then empty
}

// Priority bounds. Enqueue clamps Job.Priority into this range, which keeps the
// priority in one byte of the queue key.
const MinPriority, MaxPriority = -100, 100

// DefaultMaxAttempts is what Enqueue sets when Job.MaxAttempts is 0.
const DefaultMaxAttempts = 3

// MaxModelLen is the longest model name accepted (it is a bbolt bucket name).
const MaxModelLen = 256

// MaxIDLen is the longest job ID ValidID accepts.
const MaxIDLen = 64

const (
	idLen      = 20
	idTimeLen  = 9 // base-36 Unix milliseconds: enough for 3,000 years
	idAlphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
)

// NewID returns a server-made job ID: 20 characters of [0-9a-z], safe as a
// file name on any file system. The first 9 are the current Unix time in
// milliseconds in base 36, so IDs made later sort after earlier ones and the
// store appends to the end of its jobs bucket instead of splitting pages
// all over it; the other 11 come from crypto/rand (about 56 bits), so IDs
// stay unguessable and unique.
func NewID() string { return newIDAt(time.Now()) }

func newIDAt(now time.Time) string {
	var out [idLen]byte
	ms := uint64(max(now.UnixMilli(), 0))
	for i := idTimeLen - 1; i >= 0; i-- {
		out[i] = idAlphabet[ms%36]
		ms /= 36
	}
	var buf [32]byte
	n := idTimeLen
	for n < idLen {
		_, _ = rand.Read(buf[:]) // never fails since Go 1.24 (it crashes the program instead)
		for _, b := range buf {
			// 252 = 7*36: reject the top 4 byte values so every character is
			// equally likely.
			if b >= 252 {
				continue
			}
			out[n] = idAlphabet[b%36]
			n++
			if n == idLen {
				break
			}
		}
	}
	return string(out[:])
}

// ValidID reports whether id is acceptable as a job ID: 1 to MaxIDLen bytes of
// lower-case letters, digits, '-' and '_', starting with a letter or digit. Every
// NewID result is valid; the rules keep IDs safe as file names and URL path
// segments (no '/', no '.', no leading '-', no case-only differences).
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z':
		case (c == '-' || c == '_') && i > 0:
		default:
			return false
		}
	}
	return true
}

func validModel(m string) bool {
	return m != "" && len(m) <= MaxModelLen && utf8.ValidString(m)
}

func clampPriority(p int) int {
	return min(max(p, MinPriority), MaxPriority)
}

// queueKey is the key of a queued job in its model's queue bucket: one byte
// MaxPriority-priority (so higher priorities sort first) and the 8-byte
// big-endian Seq (so equal priorities keep arrival order).
func queueKey(priority int, seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = byte(MaxPriority - clampPriority(priority))
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

// seqKey is the key of a job in the order bucket: 8-byte big-endian Seq.
func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

func encodeJob(j *Job) ([]byte, error) {
	b, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	return b, nil
}

// decodeJob decodes the record stored under key and checks the invariants the
// rest of the package relies on. Anything that fails is reported as ErrCorrupt;
// decodeJob never panics on any input (see FuzzDecodeJob).
func decodeJob(key, data []byte) (Job, error) {
	var j Job
	if err := json.Unmarshal(data, &j); err != nil {
		return Job{}, fmt.Errorf("decode job %q: %w: %v", key, ErrCorrupt, err)
	}
	var problem string
	switch {
	case j.ID != string(key):
		problem = fmt.Sprintf("id %q under key %q", j.ID, key)
	case !ValidID(j.ID):
		problem = fmt.Sprintf("invalid id %q", j.ID)
	case !validModel(j.Model):
		problem = fmt.Sprintf("invalid model %q", j.Model)
	case !j.State.Valid():
		problem = fmt.Sprintf("invalid state %q", j.State)
	case j.Priority < MinPriority || j.Priority > MaxPriority:
		problem = fmt.Sprintf("priority %d out of range", j.Priority)
	case j.Attempts < 0:
		problem = fmt.Sprintf("attempts %d", j.Attempts)
	case j.MaxAttempts < 1:
		problem = fmt.Sprintf("max_attempts %d", j.MaxAttempts)
	case j.Seq == 0:
		problem = "seq 0"
	}
	if problem != "" {
		return Job{}, fmt.Errorf("decode job %q: %w: %s", key, ErrCorrupt, problem)
	}
	return j, nil
}
