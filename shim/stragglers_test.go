package shim

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestKillStragglers: after a failed runc command, a process still working in its CRIU
// work directory is killed, a stopped one too (an orphaned CRIU was found so); others
// are left alone.
func TestKillStragglers(t *testing.T) {
	work, other := t.TempDir(), t.TempDir()
	start := func(dir string) *exec.Cmd {
		cmd := exec.Command("sleep", "60")
		cmd.Dir = dir
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	running, stopped, elsewhere := start(work), start(work), start(other)
	if err := stopped.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	killStragglers("c", work, "checkpoint")
	for _, c := range []*exec.Cmd{running, stopped} {
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("pid %d in the work directory not killed", c.Process.Pid)
		}
	}
	if err := elsewhere.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("a process elsewhere was killed: %v", err)
	}
}
