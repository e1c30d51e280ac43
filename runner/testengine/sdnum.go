package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// The real programs read numeric flags with std::stoi, std::stof and
// std::stoll and catch nothing: a value that is no number, or one out of
// range, ends the process with an uncaught exception (SIGABRT, exit status
// 134 in a shell) before any error line or usage is printed. A number
// followed by other text is taken ("64px" is 64).

// cppException is the exception such a conversion throws.
type cppException struct {
	kind string // invalid_argument or out_of_range
	what string // the function: stoi, stof, stoll
}

func (e *cppException) Error() string { return "std::" + e.kind + ": " + e.what }

// abort dies as the C++ runtime does on the uncaught exception: its two
// lines on stderr, then SIGABRT with the default action.
func (e *cppException) abort() {
	fmt.Fprintf(os.Stderr, "terminate called after throwing an instance of 'std::%s'\n  what():  %s\n", e.kind, e.what)
	var act [4]uintptr // struct sigaction, zeroed: SIG_DFL (Go's own handler would exit 2)
	_, _, _ = syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(syscall.SIGABRT), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
	_ = syscall.Kill(os.Getpid(), syscall.SIGABRT)
	select {}
}

// cppInt reads s as strtol does for std::stoi (bits 32) or std::stoll
// (bits 64): leading white space, a sign, digits; the rest is ignored.
func cppInt(s string, bits int, fn string) (int64, error) {
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	i := 0
	if i < len(t) && (t[i] == '+' || t[i] == '-') {
		i++
	}
	j := i
	for j < len(t) && t[j] >= '0' && t[j] <= '9' {
		j++
	}
	if j == i {
		return 0, &cppException{"invalid_argument", fn}
	}
	v, err := strconv.ParseInt(t[:j], 10, bits)
	if err != nil {
		return 0, &cppException{"out_of_range", fn}
	}
	return v, nil
}

// cppFloat reads s as std::stof: the longest prefix that is a float.
func cppFloat(s string) (float64, error) {
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	for n := len(t); n > 0; n-- {
		v, err := strconv.ParseFloat(t[:n], 32)
		if err == nil {
			return v, nil
		}
		if errors.Is(err, strconv.ErrRange) {
			return 0, &cppException{"out_of_range", "stof"}
		}
	}
	return 0, &cppException{"invalid_argument", "stof"}
}
