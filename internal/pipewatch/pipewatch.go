// Package pipewatch tells whether what was written into pipes and FIFOs is still unread.
// It holds read-only handles on them and never reads: their own readers are not
// disturbed, and an extra reader does not delay their end of file (that waits for the
// writers only).
package pipewatch

import (
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Watch holds read-only handles on pipes and FIFOs. The zero value watches nothing.
type Watch struct {
	mu  sync.Mutex
	fds []int // guarded by mu
}

// AddProcess watches the pipes among the file descriptors fds of process pid (a
// terminal, a file or /dev/null is left out, as is a process that is gone).
func (w *Watch) AddProcess(pid int, fds ...int) {
	seen := map[string]bool{}
	for _, fd := range fds {
		path := "/proc/" + strconv.Itoa(pid) + "/fd/" + strconv.Itoa(fd)
		link, err := os.Readlink(path)
		if err != nil || !strings.HasPrefix(link, "pipe:") || seen[link] {
			continue
		}
		seen[link] = true
		w.open(path)
	}
}

// AddFile watches the pipe f is an end of (nothing if f is not a pipe).
func (w *Watch) AddFile(f *os.File) {
	if f == nil {
		return
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		path := "/proc/self/fd/" + strconv.Itoa(int(fd))
		if link, err := os.Readlink(path); err == nil && strings.HasPrefix(link, "pipe:") {
			w.open(path)
		}
	})
}

// AddFIFO watches the FIFO at path (nothing if path is not a FIFO).
func (w *Watch) AddFIFO(path string) {
	var st unix.Stat_t
	if path == "" || unix.Stat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return
	}
	w.open(path)
}

func (w *Watch) open(path string) {
	// Non-blocking: a read-only open of a FIFO with no writer must not wait.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	w.mu.Lock()
	w.fds = append(w.fds, fd)
	w.mu.Unlock()
}

// Len is the number of pipes and FIFOs watched (0 for nil).
func (w *Watch) Len() int {
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.fds)
}

// Unread is the number of bytes in the watched pipes and FIFOs that no reader has taken
// yet (0 for a nil or closed Watch).
func (w *Watch) Unread() int {
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	total := 0
	for _, fd := range w.fds {
		total += unread(fd)
	}
	return total
}

// UnreadIn is the number of bytes in the pipe f is an end of that no reader has taken
// yet (0 if f is nil or not a pipe). It leaves f's mode alone (Fd would make it
// blocking).
func UnreadIn(f *os.File) int {
	if f == nil {
		return 0
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) { n = unread(int(fd)) })
	return n
}

func unread(fd int) int {
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
	if err != nil {
		return 0
	}
	return n
}

// Close releases the handles. It may be called more than once, and on nil.
func (w *Watch) Close() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, fd := range w.fds {
		unix.Close(fd)
	}
	w.fds = nil
}
