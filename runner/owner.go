package runner

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Readiness is a 200 on the engine's port; but until the engine binds it
// (sd-server loads its model first, for minutes), the port is ours only in
// this process's ledger, and another program may bind it meanwhile (a
// second VramCram, any server asking for a free port). Its answers must
// not make our engine ready. So at readiness the listening socket of the
// port must belong to a process of the engine's group, as /proc tells.

// listenerOwner says whether the TCP listener on port belongs to a process
// of group pgid: known is false where /proc cannot tell (no such files, no
// listener found), and the caller then trusts the answer.
func listenerOwner(port, pgid int) (ours, known bool) {
	inodes := listenInodes(port)
	if len(inodes) == 0 {
		return false, false
	}
	for pid := range groupMembers(pgid, 0) {
		if holdsSocket(pid, inodes) {
			return true, true
		}
	}
	return false, true
}

// listenInodes returns the socket inodes listening on port (any address,
// IPv4 or IPv6) in this network namespace.
func listenInodes(port int) map[string]bool {
	want := fmt.Sprintf(":%04X", port)
	out := map[string]bool{}
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(sc.Text())
			if len(fs) >= 10 && fs[3] == "0A" && strings.HasSuffix(fs[1], want) {
				out[fs[9]] = true
			}
		}
		_ = f.Close()
	}
	return out
}

// holdsSocket reports whether pid has an open file that is one of inodes.
func holdsSocket(pid int, inodes map[string]bool) bool {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if in, ok := strings.CutPrefix(target, "socket:["); ok && inodes[strings.TrimSuffix(in, "]")] {
			return true
		}
	}
	return false
}
