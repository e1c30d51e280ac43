package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// holdGPU starts helper (a Python script) with n and waits for its
// "holding" line. The helper stays in this process's group, so GPU memory
// readings by process group count its memory as the engine's, and it exits
// when this process does.
func holdGPU(helper string, n int) error {
	if helper == "" {
		return errors.New("--test-gpu-helper PATH is required")
	}
	cmd := exec.Command("python3", helper, fmt.Sprint(n))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", helper, err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "holding") {
			logf("test: pid %d %s", cmd.Process.Pid, sc.Text())
			go func() { _ = cmd.Wait() }()
			return nil
		}
	}
	_ = cmd.Wait()
	return fmt.Errorf("%s exited before holding %d MiB", helper, n)
}
