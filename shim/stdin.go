package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/fifo"

	"github.com/warmshim/warm/internal/procfs"
)

// stdinRelay carries containerd's stdin to a container that may be recovered. Each
// incarnation of the task gets a FIFO of the shim's as its stdin path (the process
// package makes the task's stdin pipe from it), but the relay writes straight into the
// task's stdin pipe, through /proc/<pid>/fd/0, and keeps a reading handle on that pipe:
// when the task dies, whatever it had not read yet is drained from the pipe and delivered
// to the restored task, ahead of newer input. The FIFO only carries the end of input
// (CloseIO) to the process package.
type stdinRelay struct {
	bundle string
	src    io.ReadCloser

	mu     sync.Mutex
	seq    int            // guarded by mu
	fifo   io.WriteCloser // the current incarnation's FIFO (end of input only); guarded by mu
	pipe   int            // the current task's stdin pipe (non-blocking writes), -1 if none; guarded by mu
	unread int            // a reading handle on that pipe, used only once the task died, or -1; guarded by mu
	retry  bool           // a retry of held input is scheduled; guarded by mu
	closed bool           // stdin was closed (CloseIO or EOF); guarded by mu
	held   []byte         // input not delivered yet; guarded by mu
	pid    int            // the task the pipe belongs to; guarded by mu
}

// dying reports whether pid is gone, a zombie, or has a SIGKILL pending: a read it
// completes now may never reach the application.
func dying(pid int) bool {
	st, err := procfs.ReadSignals(pid)
	return err != nil || st.Zombie || procfs.Has(st.Pending, int(syscall.SIGKILL))
}

// newStdinRelay opens containerd's FIFO and returns the relay with the path of the first
// incarnation's FIFO.
func newStdinRelay(ctx context.Context, containerdFifo, bundle string) (*stdinRelay, string, error) {
	src, err := fifo.OpenFifo(context.WithoutCancel(ctx), containerdFifo, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, "", err
	}
	r := &stdinRelay{bundle: bundle, src: src, pipe: -1, unread: -1}
	path, err := r.next()
	if err != nil {
		src.Close()
		return nil, "", err
	}
	go r.pump()
	return r, path, nil
}

// next makes the next incarnation's FIFO. Until setPid names its task, input is held.
func (r *stdinRelay) next() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	path := filepath.Join(r.bundle, fmt.Sprintf("warm-stdin-%d", r.seq))
	_ = os.Remove(path)
	// Opened (asynchronously) so the task's copier never sees the FIFO without a writer.
	w, err := fifo.OpenFifo(context.Background(), path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		return "", err
	}
	if r.fifo != nil {
		r.fifo.Close()
	}
	r.fifo = w
	r.closePipeLocked()
	if r.unread >= 0 {
		// The dead task's unread input comes first. Raw non-blocking reads: an os.File
		// would wait for data instead of returning EAGAIN.
		var drained []byte
		buf := make([]byte, 64<<10)
		for {
			n, err := syscall.Read(r.unread, buf)
			if n > 0 {
				drained = append(drained, buf[:n]...)
			}
			if err != nil || n <= 0 {
				break
			}
		}
		r.held = append(drained, r.held...)
		syscall.Close(r.unread)
		r.unread = -1
	}
	if r.closed {
		w.Close()
	}
	return path, nil
}

// setPid connects the relay to the stdin pipe of the task pid and delivers held input.
func (r *stdinRelay) setPid(pid int) {
	fd0 := "/proc/" + strconv.Itoa(pid) + "/fd/0"
	p, err := syscall.Open(fd0, syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return // no stdin pipe (the task died already, or stdin is not a pipe)
	}
	u, err := syscall.Open(fd0, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		syscall.Close(p)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closePipeLocked()
	if r.unread >= 0 {
		syscall.Close(r.unread)
	}
	r.pipe, r.unread, r.pid = p, u, pid
	r.flushLocked()
	if r.closed {
		r.closePipeLocked()
	}
}

func (r *stdinRelay) closePipeLocked() {
	if r.pipe >= 0 {
		syscall.Close(r.pipe)
		r.pipe = -1
	}
}

// flushLocked writes held input to the current pipe; what cannot be written now (a
// full pipe) stays held and is retried shortly.
func (r *stdinRelay) flushLocked() {
	for len(r.held) > 0 && r.pipe >= 0 {
		if dying(r.pid) {
			// A dying task could still take the data out of the pipe: keep it for the
			// restored one.
			r.closePipeLocked()
			return
		}
		n, err := syscall.Write(r.pipe, r.held)
		if n > 0 {
			r.held = r.held[n:]
		}
		if err != nil {
			if errors.Is(err, syscall.EPIPE) {
				r.closePipeLocked() // no reader at all: keep it for the next task
				return
			}
			if errors.Is(err, syscall.EAGAIN) && !r.retry {
				r.retry = true
				time.AfterFunc(10*time.Millisecond, func() {
					r.mu.Lock()
					r.retry = false
					r.flushLocked()
					r.mu.Unlock()
				})
			}
			return
		}
	}
}

func (r *stdinRelay) pump() {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			r.held = append(r.held, buf[:n]...)
			r.flushLocked()
			r.mu.Unlock()
		}
		if err != nil {
			r.closeStdin()
			return
		}
	}
}

// closeStdin ends the task's stdin (CloseIO, or the client's end of it).
func (r *stdinRelay) closeStdin() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.unread >= 0 {
		syscall.Close(r.unread)
		r.unread = -1
	}
	r.closePipeLocked()
	if r.fifo != nil {
		r.fifo.Close()
	}
}

// close stops the relay.
func (r *stdinRelay) close() {
	r.closeStdin()
	r.src.Close()
}
