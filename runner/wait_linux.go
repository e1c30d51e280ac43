package runner

import (
	"syscall"
	"unsafe"
)

// canWaitWithoutReap: Linux waitid supports WNOWAIT.
const canWaitWithoutReap = true

// waitExited blocks until pid has exited, without reaping it: the zombie
// keeps the PID (and so the process group ID) reserved while we kill the
// rest of the group. Errors (say ECHILD) return at once; cmd.Wait then
// reports what happened.
func waitExited(pid int) {
	const pPID = 1     // idtype_t P_PID
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid),
			uintptr(unsafe.Pointer(&info[0])), syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		if errno != syscall.EINTR {
			return
		}
	}
}
