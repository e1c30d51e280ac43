package e2e

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Release archives (make release) and the installer (scripts/install.sh).

// fileState is what a second install must leave unchanged.
type fileState struct {
	mode  fs.FileMode
	mtime time.Time
	sum   string // sha256 of a regular file's content
}

// snapshot records every path under root.
func snapshot(t *testing.T, root string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fileState{mode: fi.Mode(), mtime: fi.ModTime()}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			st.sum = hex.EncodeToString(h[:])
		}
		rel, _ := filepath.Rel(root, path)
		out[rel] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// copyFile copies src to dst with mode.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

// runInstaller runs an install.sh with DESTDIR and extra environment.
func runInstaller(t *testing.T, script, destdir string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(script, args...)
	cmd.Env = append(append(cleanEnv(), "DESTDIR="+destdir), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", script, args, err, out)
	}
	return string(out)
}

// fakeArchive lays out an unpacked release archive in a temp dir: the real
// installer, config and unit, and a stand-in binary. It returns the
// installer's path and the binary's content.
func fakeArchive(t *testing.T) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	copyFile(t, "scripts/install.sh", filepath.Join(dir, "install.sh"), 0o755)
	copyFile(t, "config.example.yaml", filepath.Join(dir, "config.example.yaml"), 0o644)
	copyFile(t, unitPath, filepath.Join(dir, "vramcram.service"), 0o644)
	bin := []byte("#!/bin/sh\necho stand-in vramcram\n")
	if err := os.WriteFile(filepath.Join(dir, "vramcram"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "install.sh"), bin
}

func wantFile(t *testing.T, path string, mode fs.FileMode, content []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != mode {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
	}
	if content != nil {
		b, _ := os.ReadFile(path)
		if string(b) != string(content) {
			t.Errorf("%s: content differs from the source", path)
		}
	}
}

func wantAbsent(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s: still there (%v)", path, err)
	}
}

// TestInstall_DestDir installs from an unpacked archive into DESTDIR,
// installs again (nothing may change, an edited config survives), then
// uninstalls (binary and unit go, config and data stay) and purges.
func TestInstall_DestDir(t *testing.T) {
	script, bin := fakeArchive(t)
	dest := t.TempDir()
	out := runInstaller(t, script, dest, nil)
	if !strings.Contains(out, "no user created") {
		t.Errorf("DESTDIR install does not say it skipped the user:\n%s", out)
	}

	conf, _ := os.ReadFile("config.example.yaml")
	unit, _ := os.ReadFile(unitPath)
	wantFile(t, filepath.Join(dest, "usr/local/bin/vramcram"), 0o755, bin)
	wantFile(t, filepath.Join(dest, "etc/systemd/system/vramcram.service"), 0o644, unit)
	wantFile(t, filepath.Join(dest, "etc/vramcram/config.yaml"), 0o640, conf)
	wantFile(t, filepath.Join(dest, "var/lib/vramcram"), fs.ModeDir|0o750, nil)
	verifyInstalledUnit(t, dest, "/usr/local/bin/vramcram")

	before := snapshot(t, dest)
	runInstaller(t, script, dest, nil)
	if after := snapshot(t, dest); !maps.Equal(before, after) {
		t.Errorf("second install changed the tree:\nbefore %v\nafter  %v", before, after)
	}

	// A config the user edited is never replaced; a new binary is installed.
	edited := []byte("server: {port: 9999}\n")
	if err := os.WriteFile(filepath.Join(dest, "etc/vramcram/config.yaml"), edited, 0o640); err != nil {
		t.Fatal(err)
	}
	newBin := []byte("#!/bin/sh\necho newer\n")
	if err := os.WriteFile(filepath.Join(filepath.Dir(script), "vramcram"), newBin, 0o755); err != nil {
		t.Fatal(err)
	}
	runInstaller(t, script, dest, nil)
	wantFile(t, filepath.Join(dest, "etc/vramcram/config.yaml"), 0o640, edited)
	wantFile(t, filepath.Join(dest, "usr/local/bin/vramcram"), 0o755, newBin)

	job := filepath.Join(dest, "var/lib/vramcram/vramcram.db")
	if err := os.WriteFile(job, []byte("jobs"), 0o600); err != nil {
		t.Fatal(err)
	}
	runInstaller(t, script, dest, nil, "--uninstall")
	wantAbsent(t, filepath.Join(dest, "usr/local/bin/vramcram"))
	wantAbsent(t, filepath.Join(dest, "etc/systemd/system/vramcram.service"))
	wantFile(t, filepath.Join(dest, "etc/vramcram/config.yaml"), 0o640, edited)
	wantFile(t, job, 0o600, []byte("jobs"))
	runInstaller(t, script, dest, nil, "--uninstall") // again: nothing to do, no error

	runInstaller(t, script, dest, nil, "--uninstall", "--purge")
	wantAbsent(t, filepath.Join(dest, "etc/vramcram"))
	wantAbsent(t, filepath.Join(dest, "var/lib/vramcram"))
}

// TestInstall_SourceTreePrefix installs from a source tree (bin/vramcram,
// deploy/systemd/) with PREFIX: the unit's ExecStart follows the prefix.
func TestInstall_SourceTreePrefix(t *testing.T) {
	tree := t.TempDir()
	copyFile(t, "scripts/install.sh", filepath.Join(tree, "scripts/install.sh"), 0o755)
	copyFile(t, "config.example.yaml", filepath.Join(tree, "config.example.yaml"), 0o644)
	copyFile(t, unitPath, filepath.Join(tree, unitPath), 0o644)
	bin := []byte("#!/bin/sh\n")
	if err := os.MkdirAll(filepath.Join(tree, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "bin/vramcram"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	runInstaller(t, filepath.Join(tree, "scripts/install.sh"), dest, []string{"PREFIX=/opt/vramcram"})
	wantFile(t, filepath.Join(dest, "opt/vramcram/bin/vramcram"), 0o755, bin)
	u := unitSettings(t, filepath.Join(dest, "etc/systemd/system/vramcram.service"))
	if want := "/opt/vramcram/bin/vramcram serve -config /etc/vramcram/config.yaml"; u["ExecStart"] != want {
		t.Errorf("ExecStart=%q, want %q", u["ExecStart"], want)
	}
	verifyInstalledUnit(t, dest, "/opt/vramcram/bin/vramcram")
}

// verifyInstalledUnit runs systemd-analyze verify on the unit installed
// under dest. verify looks for ExecStart's binary on this machine, so the
// path is pointed into dest (as TestSystemdUnit_Verify does).
func verifyInstalledUnit(t *testing.T, dest, binPath string) {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: installed unit not verified")
		return
	}
	b, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system/vramcram.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(b), binPath, filepath.Join(dest, binPath))
	path := filepath.Join(t.TempDir(), "vramcram.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestRelease_Reproducible runs make release twice into two directories and
// checks that the archives are byte for byte the same, that SHA256SUMS
// checks, what the archives hold, the binaries' architecture and shared
// libraries, and that the amd64 binary reports the version and installs
// from its unpacked archive. It needs the arm64 cross compiler (.ci/run
// installs gcc-aarch64-linux-gnu); without it, it is skipped. Two cgo builds
// per architecture make it slow. RELEASE_TEST_FRESH_CACHE=1 gives the second
// build an empty Go build cache, so that compilation is repeated too.
func TestRelease_Reproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("release build: skipped with -short")
	}
	for _, tool := range []string{"make", "aarch64-linux-gnu-gcc", "tar", "gzip", "sha256sum", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: release not built (apt-get install gcc-aarch64-linux-gnu)", tool)
		}
	}
	const ver = "v0.0.0-test"
	build := func(env ...string) string {
		dist := t.TempDir()
		cmd := exec.Command("make", "release", "VERSION="+ver, "DIST="+dist)
		cmd.Env = append(cleanEnv(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make release: %v\n%s", err, out)
		}
		return dist
	}
	d1 := build()
	var env []string
	if os.Getenv("RELEASE_TEST_FRESH_CACHE") == "1" {
		env = append(env, "GOCACHE="+t.TempDir())
	}
	d2 := build(env...)

	sums1, err := os.ReadFile(filepath.Join(d1, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	sums2, _ := os.ReadFile(filepath.Join(d2, "SHA256SUMS"))
	if string(sums1) != string(sums2) {
		t.Fatalf("two builds differ:\n%s\n%s", sums1, sums2)
	}
	check := exec.Command("sha256sum", "-c", "SHA256SUMS")
	check.Dir = d1
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c: %v\n%s", err, out)
	}

	commit, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	epoch, err := exec.Command("git", "log", "-1", "--format=%ct").Output()
	if err != nil {
		t.Fatal(err)
	}
	secs, _ := strconv.ParseInt(strings.TrimSpace(string(epoch)), 10, 64)
	for _, arch := range []struct {
		name    string
		machine elf.Machine
	}{{"amd64", elf.EM_X86_64}, {"arm64", elf.EM_AARCH64}} {
		name := "vramcram_0.0.0-test_linux_" + arch.name
		if !strings.Contains(string(sums1), name+".tar.gz\n") {
			t.Errorf("SHA256SUMS lacks %s:\n%s", name, sums1)
		}
		dir := t.TempDir()
		entries := unpack(t, filepath.Join(d1, name+".tar.gz"), dir, time.Unix(secs, 0))
		want := []string{name + "/", name + "/README.md", name + "/config.example.yaml", name + "/config.schema.json", name + "/install.sh", name + "/vramcram", name + "/vramcram.service"}
		if _, err := os.Stat("LICENSE"); err == nil {
			want = append(want, name+"/LICENSE")
		}
		slices.Sort(want)
		if !slices.Equal(entries, want) {
			t.Errorf("%s holds %q, want %q (sorted)", name, entries, want)
		}
		bin := filepath.Join(dir, name, "vramcram")
		checkELF(t, bin, arch.machine)
		if arch.name != "amd64" {
			continue
		}
		out, err := exec.Command(bin, "--version").Output()
		if err != nil {
			t.Fatalf("%s --version: %v", bin, err)
		}
		for _, w := range []string{"vramcram " + ver + "\n", strings.TrimSpace(string(commit)), "nvml:     built in"} {
			if !strings.Contains(string(out), w) {
				t.Errorf("--version lacks %q:\n%s", w, out)
			}
		}
		dest := t.TempDir()
		runInstaller(t, filepath.Join(dir, name, "install.sh"), dest, nil)
		wantFile(t, filepath.Join(dest, "usr/local/bin/vramcram"), 0o755, mustRead(t, bin))
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// unpack extracts a .tar.gz into dir, checks that every entry has owner
// 0:0, mtime, and mode 0755 or 0644, and returns the entry names in archive
// order.
func unpack(t *testing.T, archive, dir string, mtime time.Time) []string {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if !zr.ModTime.IsZero() || zr.Name != "" {
		t.Errorf("%s: gzip header keeps name %q / time %v (want gzip -n)", archive, zr.Name, zr.ModTime)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(mtime) {
			t.Errorf("%s: owner %d:%d (%q:%q) mtime %v, want 0:0, no names, %v", h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime, mtime)
		}
		if m := h.FileInfo().Mode().Perm(); m != 0o755 && m != 0o644 {
			t.Errorf("%s: mode %v", h.Name, m)
		}
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, h.FileInfo().Mode().Perm()); err != nil {
				t.Fatal(err)
			}
		default:
			t.Errorf("%s: unexpected type %c", h.Name, h.Typeflag)
		}
	}
	return names
}

// checkELF checks a binary's architecture and that it needs only glibc's
// libraries (NVML is opened at run time with dlopen, not linked).
func checkELF(t *testing.T, path string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s: machine %v, want %v", path, f.Machine, machine)
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	allowed := []string{"libc.so.6", "libpthread.so.0", "libdl.so.2", "libm.so.6", "libresolv.so.2"}
	for _, l := range libs {
		if !slices.Contains(allowed, l) && !strings.HasPrefix(l, "ld-linux") {
			t.Errorf("%s needs %s; want glibc only (%v)", path, l, allowed)
		}
	}
	if !slices.Contains(libs, "libc.so.6") {
		t.Errorf("%s: libraries %v: want a cgo (glibc) build", path, libs)
	}
	t.Logf("%s: %v, needs %v", filepath.Base(filepath.Dir(path)), f.Machine, libs)
}
