package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// damageFixture is a closed store file with jobs in every state.
type damageFixture struct {
	path string
	jobs map[string]Job    // as stored, by ID
	res  map[string][]byte // results of the completed jobs
}

// newDamageFixture writes n jobs for two models: every fourth completed
// (with a result), every fourth failed, every fourth running, the rest
// queued. Prompts are long enough to spread the jobs over many pages.
func newDamageFixture(t *testing.T, n int) *damageFixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vramcram.db")
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	f := &damageFixture{path: path, jobs: map[string]Job{}, res: map[string][]byte{}}
	ctx := context.Background()
	for i := range n {
		j := Job{ID: fmt.Sprintf("job-%04d", i), Model: []string{"alpha", "beta"}[i%2], Type: "llm", Prompt: strings.Repeat("p", 200)}
		if err := s.Enqueue(ctx, &j); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		id := fmt.Sprintf("job-%04d", i)
		if i%4 == 3 {
			continue // stays queued
		}
		switch i % 4 {
		case 0:
			f.claimExact(t, s, id)
			r := []byte(fmt.Sprintf(`{"type":"llm","text":"result of %s"}`, id))
			if err := s.Complete(id, r); err != nil {
				t.Fatal(err)
			}
			f.res[id] = r
		case 1:
			if err := s.Fail(id, "engine exited"); err != nil {
				t.Fatal(err)
			}
		case 2:
			f.claimExact(t, s, id)
		}
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	all, err := s.List(ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range all {
		f.jobs[j.ID] = j
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

// claimExact moves the queued job id to running, as Claim would move the
// head of its queue.
func (f *damageFixture) claimExact(t *testing.T, s *Store, id string) {
	t.Helper()
	j, err := s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	err = s.write(context.Background(), func(tx *txn) (func() error, error) {
		return func() error {
			j.State = JobStateRunning
			j.Attempts = 1
			j.StartedAt = time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)
			return tx.transition(&j, JobStateQueued)
		}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// pageSizeOf reads the page size from the file's meta.
func pageSizeOf(t *testing.T, path string) int {
	t.Helper()
	m, _, ok, err := readMetas(path)
	if err != nil || !ok {
		t.Fatalf("read meta: %v %v", ok, err)
	}
	return int(m.pageSize)
}

// jobsLeaves returns the page ids of the jobs bucket's leaf pages (its root
// must be a branch page: the fixture is big enough).
func jobsLeaves(t *testing.T, path string) (root uint64, leaves []uint64) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bbolt.Tx) error {
		root = uint64(tx.Bucket(bucketJobs).Root())
		return nil
	})
	ps := pageSizeOf(t, path)
	page := readPage(t, path, root, ps)
	if binary.LittleEndian.Uint16(page[8:]) != 0x01 {
		t.Fatalf("jobs root page %d is not a branch page", root)
	}
	for i := range int(binary.LittleEndian.Uint16(page[10:])) {
		e := page[pageHeaderLen+i*16:]
		leaves = append(leaves, binary.LittleEndian.Uint64(e[8:]))
	}
	return root, leaves
}

func readPage(t *testing.T, path string, id uint64, ps int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, ps)
	if _, err := f.ReadAt(b, int64(id)*int64(ps)); err != nil {
		t.Fatal(err)
	}
	return b
}

// overwritePage fills page id with bytes from fill.
func overwritePage(t *testing.T, path string, id uint64, ps int, fill func([]byte)) {
	t.Helper()
	b := make([]byte, ps)
	fill(b)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, int64(id)*int64(ps)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// leafJobIDs lists the job IDs stored on leaf page id.
func leafJobIDs(t *testing.T, path string, id uint64, ps int) []string {
	t.Helper()
	var ids []string
	for _, p := range appendLeaf(nil, readPage(t, path, id, ps), 0) {
		ids = append(ids, string(p.key))
	}
	return ids
}

// wantCorrupt checks that err is a clear corruption error: ErrCorrupt,
// naming the file and the commands that help.
func wantCorrupt(t *testing.T, err error, path string) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open a damaged file: %v, want ErrCorrupt", err)
	}
	for _, want := range []string{path, "vramcram store check", "vramcram store recover"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestOpen_Truncated(t *testing.T) {
	f := newDamageFixture(t, 120)
	fi, err := os.Stat(f.path)
	if err != nil {
		t.Fatal(err)
	}
	ps := int64(pageSizeOf(t, f.path))
	meta, _, _, _ := readMetas(f.path)
	hw := int64(meta.pgid) * ps
	for _, size := range []int64{hw / 2, hw - ps, hw - 1, 2*ps + 100, ps + 10, 100} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vramcram.db")
			copyFile(t, f.path, path)
			if err := os.Truncate(path, size); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path, Options{NoSync: true, Timeout: 100 * time.Millisecond})
			wantCorrupt(t, err, path)
		})
	}
	_ = fi
}

// TestOpen_OverwrittenPages overwrites each page of the file in turn (zeros,
// 0xff, random bytes): Open either refuses with a clear ErrCorrupt or, when
// the page was free, opens a consistent store. It never panics or crashes.
func TestOpen_OverwrittenPages(t *testing.T) {
	f := newDamageFixture(t, 120)
	ps := pageSizeOf(t, f.path)
	meta, _, _, _ := readMetas(f.path)
	fills := map[string]func([]byte){
		"zeros": func(b []byte) { clear(b) },
		"ones": func(b []byte) {
			for i := range b {
				b[i] = 0xff
			}
		},
		"random": func(b []byte) {
			r := rand.New(rand.NewPCG(1, 2))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
		},
	}
	refused := 0
	for name, fill := range fills {
		for id := uint64(0); id < meta.pgid; id++ {
			path := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%d.db", name, id))
			copyFile(t, f.path, path)
			overwritePage(t, path, id, ps, fill)
			s, err := Open(path, Options{NoSync: true, Timeout: 100 * time.Millisecond})
			if err != nil {
				wantCorrupt(t, err, path)
				refused++
				continue
			}
			if err := s.Check(); err != nil {
				t.Errorf("%s page %d: opened but check fails: %v", name, id, err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		}
	}
	if refused == 0 {
		t.Fatal("no overwritten page was refused: the test damaged nothing")
	}
	t.Logf("%d of %d damaged files refused", refused, 3*meta.pgid)
}

// TestSalvage_DamagedLeaf damages one leaf page of the jobs bucket: check
// reports it, Salvage brings back every job of the other pages with its
// state and result, keeps the damaged file, and the result opens.
func TestSalvage_DamagedLeaf(t *testing.T) {
	f := newDamageFixture(t, 120)
	ps := pageSizeOf(t, f.path)
	_, leaves := jobsLeaves(t, f.path)
	bad := leaves[len(leaves)/2]
	lost := leafJobIDs(t, f.path, bad, ps)
	if len(lost) == 0 {
		t.Fatal("the chosen leaf holds no jobs")
	}
	overwritePage(t, f.path, bad, ps, func(b []byte) { clear(b) })

	_, err := Open(f.path, Options{NoSync: true, Timeout: 100 * time.Millisecond})
	wantCorrupt(t, err, f.path)
	rep, err := CheckFile(f.path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) == 0 {
		t.Fatal("check found no damage")
	}

	now := time.Date(2026, 9, 1, 10, 0, 0, 0, time.UTC)
	srep, err := Salvage(f.path, now, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if srep.Damaged != f.path+".damaged-20260901T100000Z" {
		t.Errorf("damaged file kept as %q", srep.Damaged)
	}
	if _, err := os.Stat(srep.Damaged); err != nil {
		t.Errorf("damaged file: %v", err)
	}
	s := openTest(t, f.path, Options{NoSync: true})
	checkSalvaged(t, s, f, lost)
	t.Logf("salvage report: %+v (jobs on the damaged page: %d)", srep, len(lost))
}

// TestSalvage_DamagedBranch damages the jobs bucket's root: bbolt reads no
// job at all, and the page scan brings every one back.
func TestSalvage_DamagedBranch(t *testing.T) {
	f := newDamageFixture(t, 120)
	ps := pageSizeOf(t, f.path)
	root, _ := jobsLeaves(t, f.path)
	overwritePage(t, f.path, root, ps, func(b []byte) { clear(b) })
	_, err := Open(f.path, Options{NoSync: true, Timeout: 100 * time.Millisecond})
	wantCorrupt(t, err, f.path)

	srep, err := Salvage(f.path, time.Now(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if srep.FromPageScan != len(f.jobs) {
		t.Errorf("%d jobs from the page scan, want all %d", srep.FromPageScan, len(f.jobs))
	}
	s := openTest(t, f.path, Options{NoSync: true})
	checkSalvaged(t, s, f, nil)
}

// checkSalvaged checks that every job of f except those in lost is in s with
// its state (running ones requeued by Open) and result, and that the queued
// ones can be claimed.
func checkSalvaged(t *testing.T, s *Store, f *damageFixture, lost []string) {
	t.Helper()
	isLost := map[string]bool{}
	for _, id := range lost {
		isLost[id] = true
	}
	queued := 0
	for id, want := range f.jobs {
		got, err := s.Get(id)
		if isLost[id] {
			continue // may come back from a freed page, or not
		}
		if err != nil {
			t.Errorf("job %s lost: %v", id, err)
			continue
		}
		wantState := want.State
		if wantState == JobStateRunning {
			wantState = JobStateQueued // Open requeues what a crash left running
		}
		if got.State != wantState || got.Model != want.Model || got.Seq != want.Seq || got.Prompt != want.Prompt {
			t.Errorf("job %s: %s/%s/%d, want %s/%s/%d", id, got.State, got.Model, got.Seq, wantState, want.Model, want.Seq)
		}
		if r, ok := f.res[id]; ok {
			if res, err := s.Result(id); err != nil || string(res) != string(r) {
				t.Errorf("result %s: %q, %v; want %q", id, res, err, r)
			}
		}
		if got.State == JobStateQueued {
			queued++
		}
	}
	claimed := 0
	for _, m := range []string{"alpha", "beta"} {
		for {
			j, err := s.Claim(m)
			if errors.Is(err, ErrEmpty) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Complete(j.ID, []byte("ok")); err != nil {
				t.Fatal(err)
			}
			claimed++
		}
	}
	if claimed < queued {
		t.Errorf("claimed %d jobs after salvage, want at least the %d queued", claimed, queued)
	}
}

// TestCheckFile_Sound: a sound file has no problems; a locked one is
// reported as locked.
func TestCheckFile_Sound(t *testing.T) {
	f := newDamageFixture(t, 20)
	rep, err := CheckFile(f.path, time.Second)
	if err != nil || len(rep.Problems) > 0 {
		t.Fatalf("check a sound file: %+v, %v", rep, err)
	}
	if rep.Schema != SchemaVersion || rep.Jobs[JobStateCompleted] != 5 {
		t.Errorf("report %+v", rep)
	}
	s := openTest(t, f.path, Options{NoSync: true})
	_ = s
	if _, err := CheckFile(f.path, 100*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Errorf("check while open: %v, want ErrLocked", err)
	}
	if _, err := Salvage(f.path, time.Now(), 100*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Errorf("salvage while open: %v, want ErrLocked", err)
	}
}

// openDamageFixture opens a fresh damage fixture as a daemon would and
// returns it with its page size and the jobs bucket's root page, read after
// Open (whose recovery rewrites pages). The store closes with the test.
func openDamageFixture(t *testing.T) (*damageFixture, *Store, int, uint64) {
	t.Helper()
	f := newDamageFixture(t, 120)
	ps := pageSizeOf(t, f.path)
	s, err := Open(f.path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var root uint64
	_ = s.db.View(func(tx *bbolt.Tx) error {
		root = uint64(tx.Bucket(bucketJobs).Root())
		return nil
	})
	return f, s, ps, root
}

// TestStore_DamageWhileOpen: pages damaged under a running daemon (the file
// is mapped, so the damage shows at once) make the retention cleanup and the
// reads return ErrCorrupt naming the file instead of panicking.
func TestStore_DamageWhileOpen(t *testing.T) {
	f, s, ps, root := openDamageFixture(t)
	overwritePage(t, f.path, root, ps, func(b []byte) {
		for i := range b {
			b[i] = 0xff
		}
	})
	if _, err := s.Cleanup(time.Now().Add(time.Hour)); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), f.path) {
		t.Errorf("cleanup of a damaged store: %v, want ErrCorrupt naming the file", err)
	}
	if _, err := s.List(ListFilter{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("list of a damaged store: %v, want ErrCorrupt", err)
	}
	if _, err := s.Get("job-0001"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("get from a damaged store: %v, want ErrCorrupt", err)
	}
}

// TestStore_DamagedWhileOpen_Writes: writes to a store whose pages are
// damaged under it, through a garbage page (bbolt panics) or a branch page
// pointing far past the end of the file (a memory fault), return ErrCorrupt
// naming the file: the committer neither dies nor takes the daemon down,
// and it still answers after the damage.
func TestStore_DamagedWhileOpen_Writes(t *testing.T) {
	for name, fill := range map[string]func(root uint64) func([]byte){
		"garbage": func(uint64) func([]byte) {
			return func(b []byte) {
				for i := range b {
					b[i] = 0xff
				}
			}
		},
		"wild branch": func(root uint64) func([]byte) {
			return func(b []byte) {
				binary.LittleEndian.PutUint64(b[0:], root)
				binary.LittleEndian.PutUint16(b[8:], 0x01) // branch page
				binary.LittleEndian.PutUint16(b[10:], 1)   // one element
				e := b[pageHeaderLen:]
				binary.LittleEndian.PutUint32(e[0:], 16)    // key right after the element
				binary.LittleEndian.PutUint32(e[4:], 1)     // key size
				binary.LittleEndian.PutUint64(e[8:], 1<<32) // child page: 16 TiB in
				e[16] = 'j'
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			f, s, ps, root := openDamageFixture(t)
			overwritePage(t, f.path, root, ps, fill(root))
			for i := range 2 { // the second write finds the committer alive
				j := Job{ID: fmt.Sprintf("after-damage-%d", i), Model: "alpha", Type: "llm", Prompt: "p"}
				wantCorrupt(t, s.Enqueue(context.Background(), &j), f.path)
			}
			if _, err := s.Cancel("job-0003"); !errors.Is(err, ErrCorrupt) {
				t.Errorf("cancel in a damaged store: %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestSalvage_WildOverflow: a leaf page whose header claims billions of
// overflow pages makes the page scan read to the end of the file, not try
// to allocate terabytes; the other leaves' jobs come back.
func TestSalvage_WildOverflow(t *testing.T) {
	f := newDamageFixture(t, 120)
	ps := pageSizeOf(t, f.path)
	_, leaves := jobsLeaves(t, f.path)
	bad := leaves[0]
	page := readPage(t, f.path, bad, ps)
	binary.LittleEndian.PutUint32(page[12:], 0xfffffff0)
	overwritePage(t, f.path, bad, ps, func(b []byte) { copy(b, page) })
	rep, err := Salvage(f.path, time.Now(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, n := range rep.Jobs {
		got += n
	}
	if want := len(f.jobs) - len(leafJobIDs(t, rep.Damaged, bad, ps)); got < want {
		t.Errorf("salvaged %d jobs, want at least %d (all but the damaged leaf's)", got, want)
	}
}

// TestCheckFile_Damaged: check reports truncation and damaged pages (and
// never crashes on them); salvage of a truncated file keeps what it can.
func TestCheckFile_Damaged(t *testing.T) {
	f := newDamageFixture(t, 120)
	ps := pageSizeOf(t, f.path)
	meta, _, _, _ := readMetas(f.path)
	for _, size := range []int64{int64(meta.pgid) * int64(ps) / 2, int64(meta.pgid-1) * int64(ps)} {
		path := filepath.Join(t.TempDir(), "vramcram.db")
		copyFile(t, f.path, path)
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
		rep, err := CheckFile(path, time.Second)
		if err != nil || len(rep.Problems) == 0 || !strings.Contains(rep.Problems[0], "truncated") {
			t.Fatalf("check a file truncated to %d: %+v, %v", size, rep, err)
		}
		srep, err := Salvage(path, time.Now(), time.Second)
		if err != nil {
			t.Fatalf("salvage a file truncated to %d: %v", size, err)
		}
		s := openTest(t, path, Options{NoSync: true})
		if got := srep.Jobs[JobStateQueued] + srep.Jobs[JobStateRunning] + srep.Jobs[JobStateCompleted] + srep.Jobs[JobStateFailed]; got == 0 {
			t.Errorf("salvaged nothing from a file truncated to %d: %+v", size, srep)
		}
		_ = s
	}
	for id := uint64(2); id < meta.pgid; id++ {
		path := filepath.Join(t.TempDir(), "vramcram.db")
		copyFile(t, f.path, path)
		overwritePage(t, path, id, ps, func(b []byte) { clear(b) })
		if _, err := CheckFile(path, time.Second); err != nil {
			t.Fatalf("check with page %d zeroed: %v", id, err)
		}
	}
}

// TestSalvage_KeepsBatchesAndFiles: batch records, their lines and file
// records come through a recovery with the jobs (they were dropped: the
// batch then never finished and its files had no record). Two recoveries
// in one second keep both backups.
func TestSalvage_KeepsBatchesAndFiles(t *testing.T) {
	tb := setup(t)
	ctx := context.Background()
	f := File{ID: NewSortableID("file-", tb.clock.Now()), Bytes: 42, CreatedAt: tb.clock.Now(), Filename: "in.jsonl", Purpose: "batch"}
	if err := tb.s.PutFile(ctx, f); err != nil {
		t.Fatal(err)
	}
	b := newBatch(t, tb, BatchInProgress)
	if n, err := tb.s.EnqueueBatchLines(b.ID, 0, batchLines(3, "a"), -10, 2); err != nil || n != 3 {
		t.Fatalf("enqueue lines: %d %v", n, err)
	}
	if err := tb.s.Close(); err != nil {
		t.Fatal(err)
	}
	var backups []string
	for range 2 {
		rep, err := Salvage(tb.path, tb.clock.Now(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Batches != 1 || rep.Files != 1 || rep.Jobs[JobStateQueued] != 3 {
			t.Fatalf("report %+v, want 1 batch, 1 file, 3 queued jobs", rep)
		}
		backups = append(backups, rep.Damaged)
	}
	if backups[0] == backups[1] {
		t.Fatalf("two recoveries in one second wrote one backup: %v", backups)
	}
	for _, p := range backups {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("backup: %v", err)
		}
	}
	s := openTest(t, tb.path, Options{NoSync: true})
	if got, err := s.GetFile(f.ID); err != nil || got.Bytes != 42 {
		t.Fatalf("file after recovery: %+v %v", got, err)
	}
	if got, err := s.GetBatch(b.ID); err != nil || got.Enqueued != 3 || got.Status != BatchInProgress {
		t.Fatalf("batch after recovery: %+v %v", got, err)
	}
	if ls, err := s.BatchLines(b.ID, 0, 10); err != nil || len(ls) != 3 || ls[2].CustomID != "req-2" || ls[2].Job.ID != BatchJobID(b.ID, 2) {
		t.Fatalf("batch lines after recovery: %+v %v", ls, err)
	}
}
