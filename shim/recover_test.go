package shim

import (
	"syscall"
	"testing"
)

// TestCannotEnd: the signals containerd may send that never end a task by their default
// action leave its crash recovery on; the others take it away for the exit that follows.
func TestCannotEnd(t *testing.T) {
	for _, sig := range []syscall.Signal{0, syscall.SIGWINCH, syscall.SIGCHLD, syscall.SIGCONT, syscall.SIGURG, syscall.SIGSTOP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU} {
		if !cannotEnd(sig) {
			t.Errorf("%v: said to end a task", sig)
		}
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGALRM, syscall.SIGABRT, syscall.SIGSEGV} {
		if cannotEnd(sig) {
			t.Errorf("%v: said never to end a task", sig)
		}
	}
}
