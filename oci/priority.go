package oci

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// backgroundNice is the nice value of pool refills: a restore (runc and CRIU) is
// background work and must not take the CPU from the Create/Start it is there to serve.
// CRIU gives the restored task back the scheduling values it was dumped with.
const backgroundNice = 10

// lowPriority runs fn (which starts child processes) on an OS thread of its own whose
// nice value is backgroundNice: children inherit the nice value of the thread that
// forks them. The thread gets its value back before it serves anything else (it is
// not left to die: go-runc's children have a parent-death signal tied to it).
func lowPriority(fn func() error) error {
	runtime.LockOSThread()
	tid := unix.Gettid()
	raw, err := unix.Getpriority(unix.PRIO_PROCESS, tid) // the syscall returns 20-nice
	if err != nil || unix.Setpriority(unix.PRIO_PROCESS, tid, backgroundNice) != nil {
		runtime.UnlockOSThread()
		return fn()
	}
	defer func() {
		if unix.Setpriority(unix.PRIO_PROCESS, tid, 20-raw) == nil {
			runtime.UnlockOSThread()
		}
		// Otherwise the goroutine exits with the thread locked and Go retires the thread:
		// nothing else runs at the lowered priority.
	}()
	return fn()
}
