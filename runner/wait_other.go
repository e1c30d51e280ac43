//go:build !linux

package runner

// canWaitWithoutReap is false off Linux: the supervisor reaps first and
// kills the group just after, which leaves a small PID-reuse window.
const canWaitWithoutReap = false

func waitExited(pid int) {}
