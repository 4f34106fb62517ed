package recovery

import (
	"strings"
	"syscall"

	"github.com/warmshim/warm/internal/procfs"
)

// Effect is what a signal sent by containerd's Kill does to a task's init, which decides
// whether the exit that may follow is the end containerd asked for.
type Effect int

const (
	// NoEffect: the signal cannot end the task (ignored, dropped by the kernel, or a
	// default action that does not terminate): recovery stays on.
	NoEffect Effect = iota
	// Ends: the signal's default action ends the task: its exit is the one asked for.
	Ends
	// Handled: the task catches the signal and decides (a graceful stop, or a reload):
	// an exit within kill_grace is the one asked for, a later one is a crash.
	Handled
)

func (e Effect) String() string {
	switch e {
	case NoEffect:
		return "no effect"
	case Ends:
		return "ends the task"
	case Handled:
		return "handled by the task"
	}
	return "unknown"
}

// NonTerminating reports whether sig's default action leaves a task running (SIGSTOP and
// the job-control stops suspend it; a suspended task is not an exit).
func NonTerminating(sig syscall.Signal) bool {
	switch sig {
	case syscall.SIGCHLD, syscall.SIGCONT, syscall.SIGURG, syscall.SIGWINCH,
		syscall.SIGSTOP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU:
		return true
	}
	return false
}

// CannotEnd reports whether sig never ends a task whatever the task does: signal 0 (an
// existence check) and SIGSTOP, which cannot be caught.
func CannotEnd(sig syscall.Signal) bool { return sig == 0 || sig == syscall.SIGSTOP }

// SignalEffect tells what sig does to the init whose signal state is st. SIGKILL always
// ends it.
func SignalEffect(sig syscall.Signal, st procfs.Signals) Effect {
	switch {
	case sig == syscall.SIGKILL:
		return Ends
	case CannotEnd(sig):
		return NoEffect
	case strings.HasPrefix(st.Name, "runc:["):
		// Still runc's init (a container created, or started a moment ago, not yet
		// its process): Go's runtime catches every signal and exits on those that end
		// a process by default. The process that follows starts with the defaults.
		if NonTerminating(sig) {
			return NoEffect
		}
		return Ends
	case procfs.Has(st.Ignored, int(sig)):
		return NoEffect
	case sig == syscall.SIGCHLD, sig == syscall.SIGCONT, sig == syscall.SIGURG:
		// Handlers of these are for children, resumption and out-of-band data, not
		// for stopping (unlike SIGWINCH: httpd's graceful stop).
		return NoEffect
	case procfs.Has(st.Caught, int(sig)):
		return Handled
	case NonTerminating(sig):
		return NoEffect
	case st.NamespacePid == 1:
		// A PID namespace's init: the kernel drops a signal it has no handler for.
		return NoEffect
	}
	return Ends
}
