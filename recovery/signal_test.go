package recovery

import (
	"syscall"
	"testing"

	"github.com/warmshim/warm/internal/procfs"
)

func mask(sigs ...syscall.Signal) uint64 {
	var m uint64
	for _, s := range sigs {
		m |= 1 << uint(s-1)
	}
	return m
}

// TestSignalEffect: what containerd's signal does to an init, from its signal state,
// decides whether the exit that follows is recovered.
func TestSignalEffect(t *testing.T) {
	plain := procfs.Signals{NamespacePid: 7}  // not a namespace's init, no handler
	nsInit := procfs.Signals{NamespacePid: 1} // a container's init, no handler
	traps := procfs.Signals{NamespacePid: 1, Caught: mask(syscall.SIGTERM, syscall.SIGHUP, syscall.SIGWINCH, syscall.SIGCHLD)}
	ignores := procfs.Signals{NamespacePid: 7, Ignored: mask(syscall.SIGTERM), Caught: mask(syscall.SIGTERM)}
	all := ^uint64(0)
	runcInit := procfs.Signals{Name: "runc:[2:INIT]", NamespacePid: 1, Caught: all} // Go catches everything
	cases := []struct {
		sig  syscall.Signal
		st   procfs.Signals
		want Effect
	}{
		{syscall.SIGKILL, nsInit, Ends},
		{syscall.SIGKILL, ignores, Ends},
		{0, plain, NoEffect},
		{syscall.SIGSTOP, plain, NoEffect},
		{syscall.SIGTERM, plain, Ends},
		{syscall.SIGHUP, plain, Ends},
		{syscall.SIGTERM, nsInit, NoEffect}, // the kernel drops it
		{syscall.SIGQUIT, nsInit, NoEffect},
		{syscall.SIGTERM, traps, Handled},
		{syscall.SIGHUP, traps, Handled},
		{syscall.SIGWINCH, traps, Handled}, // httpd's graceful stop
		{syscall.SIGCHLD, traps, NoEffect}, // a shell's children, not a stop
		{syscall.SIGTERM, ignores, NoEffect},
		{syscall.SIGWINCH, plain, NoEffect}, // ignored by default
		{syscall.SIGCONT, plain, NoEffect},
		{syscall.SIGTSTP, plain, NoEffect},
		{syscall.SIGUSR1, plain, Ends},
		{syscall.SIGUSR1, traps, NoEffect}, // nsInit without a handler for it
		{syscall.SIGTERM, runcInit, Ends},  // Go's runtime exits on it
		{syscall.SIGHUP, runcInit, Ends},
		{syscall.SIGWINCH, runcInit, NoEffect}, // not a handler of the task's
		{syscall.SIGCHLD, runcInit, NoEffect},
		{0, runcInit, NoEffect},
	}
	for _, c := range cases {
		if got := SignalEffect(c.sig, c.st); got != c.want {
			t.Errorf("%v on %+v: %v, want %v", c.sig, c.st, got, c.want)
		}
	}
}
