package shim

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/containerd/fifo"
)

// stdinRelay stands between containerd's stdin FIFO and the task of a container that
// may be recovered: the task reads a FIFO of the shim's, one per incarnation, and a
// restore switches the relay to the new one. The old copier then reads EOF and stops,
// instead of swallowing input meant for the restored task.
type stdinRelay struct {
	bundle string
	src    io.ReadCloser

	mu      sync.Mutex
	seq     int            // guarded by mu
	dst     io.WriteCloser // the current incarnation's FIFO; guarded by mu
	closed  bool           // stdin was closed (CloseIO or EOF); guarded by mu
	holding bool           // the task died: input waits for the restored one; guarded by mu
	held    []byte         // input received while holding; guarded by mu
}

// newStdinRelay opens containerd's FIFO and returns the relay with the path of the first
// incarnation's FIFO.
func newStdinRelay(ctx context.Context, containerdFifo, bundle string) (*stdinRelay, string, error) {
	src, err := fifo.OpenFifo(context.WithoutCancel(ctx), containerdFifo, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, "", err
	}
	r := &stdinRelay{bundle: bundle, src: src}
	path, err := r.next()
	if err != nil {
		src.Close()
		return nil, "", err
	}
	go r.pump()
	return r, path, nil
}

// next makes the next incarnation's FIFO and makes it the destination.
func (r *stdinRelay) next() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	path := filepath.Join(r.bundle, fmt.Sprintf("warm-stdin-%d", r.seq))
	_ = os.Remove(path)
	// The writer opens once the task's copier opens the reading end.
	w, err := fifo.OpenFifo(context.Background(), path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		return "", err
	}
	if r.dst != nil {
		r.dst.Close() // the previous incarnation's copier reads EOF
	}
	r.dst = w
	if len(r.held) > 0 {
		data := r.held
		r.held = nil
		go func() { _, _ = w.Write(data) }() // completes once the task's copier opens
	}
	r.holding = false
	if r.closed {
		w.Close()
	}
	return path, nil
}

// hold keeps input from the dead incarnation: it is buffered for the next one.
func (r *stdinRelay) hold() {
	r.mu.Lock()
	r.holding = true
	r.mu.Unlock()
}

func (r *stdinRelay) pump() {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			if r.holding {
				r.held = append(r.held, buf[:n]...)
				r.mu.Unlock()
				continue
			}
			dst := r.dst
			r.mu.Unlock()
			if dst != nil {
				_, _ = dst.Write(buf[:n])
			}
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
	if r.dst != nil {
		r.dst.Close()
	}
}

// close stops the relay.
func (r *stdinRelay) close() {
	r.closeStdin()
	r.src.Close()
}
