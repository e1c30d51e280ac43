package vram

import (
	"os"
	"strconv"
	"strings"
)

// processGroups returns the process group of each PID that /proc knows. A
// PID that NVML reports from another PID namespace (a container) is simply
// left out. It returns nil when it knows none.
func processGroups(byPID map[int]int) map[int]int {
	var out map[int]int
	for pid := range byPID {
		if g, ok := processGroup(pid); ok {
			if out == nil {
				out = map[int]int{}
			}
			out[pid] = g
		}
	}
	return out
}

// processGroup reads field 5 (pgrp) of /proc/PID/stat. The command name in
// field 2 may hold spaces and parentheses, so parsing starts after the last
// ')'.
func processGroup(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	k := strings.LastIndexByte(s, ')')
	if k < 0 {
		return 0, false
	}
	f := strings.Fields(s[k+1:]) // state ppid pgrp ...
	if len(f) < 3 {
		return 0, false
	}
	g, err := strconv.Atoi(f[2])
	return g, err == nil
}
