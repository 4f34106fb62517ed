package shim

import (
	"context"
	"io"
	"os"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
	"github.com/containerd/containerd/v2/pkg/stdio"

	"github.com/warmshim/warm/internal/pipewatch"
)

type fakeProcess struct{ process.Process }

func (fakeProcess) ID() string { return "p" }

// Stdio: no FIFOs (the tests watch pipes of their own).
func (fakeProcess) Stdio() stdio.Stdio { return stdio.Stdio{} }

func drainService() *service {
	return &service{context: context.Background(), outputs: map[process.Process]*outputDrain{}}
}

func watchOf(f *os.File) *pipewatch.Watch {
	w := &pipewatch.Watch{}
	w.AddFile(f)
	return w
}

func outputPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// TestAfterOutputWaits: an exit is reported only once the process's output was read
// out of its pipe (containerd's client drops what it has not read when it deletes the
// task), and at once when nothing is pending.
func TestAfterOutputWaits(t *testing.T) {
	s := drainService()
	r, w := outputPipe(t)
	p := &fakeProcess{}
	s.outputs[p] = &outputDrain{pipes: watchOf(w)}
	if _, err := w.Write([]byte("last line\n")); err != nil {
		t.Fatal(err)
	}
	reported := make(chan struct{})
	s.afterOutput("c", p, func() { close(reported) })
	s.mu.Lock()
	watched := s.outputs[p] != nil
	s.mu.Unlock()
	if watched {
		t.Fatal("the watch stays registered once the exit is being reported")
	}
	// Nothing reads the pipe yet: the exit must not be reported. (outputDrainTimeout is
	// long; this only gives a wrong implementation the chance to report.)
	select {
	case <-reported:
		t.Fatal("exit reported while the output was unread")
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := io.ReadFull(r, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reported:
	case <-time.After(time.Minute):
		t.Fatal("exit not reported after the output was read")
	}

	// Nothing pending: reported before afterOutput returns.
	s.outputs[p] = &outputDrain{pipes: watchOf(w)}
	done := false
	s.afterOutput("c", p, func() { done = true })
	if !done {
		t.Fatal("exit with nothing pending not reported at once")
	}
	// No watch (a terminal, a process gone before it was watched): at once too.
	done = false
	s.afterOutput("c", p, func() { done = true })
	if !done {
		t.Fatal("exit without a watch not reported at once")
	}
}

// TestAfterOutputMore: output still on its way into the pipes (a pool hit's pumps)
// holds the exit as unread output does.
func TestAfterOutputMore(t *testing.T) {
	s := drainService()
	p := &fakeProcess{}
	more := make(chan bool, 1)
	more <- true
	pumping := true
	s.outputs[p] = &outputDrain{more: func() bool {
		select {
		case v := <-more:
			pumping = v
		default:
		}
		return pumping
	}}
	reported := make(chan struct{})
	s.afterOutput("c", p, func() { close(reported) })
	select {
	case <-reported:
		t.Fatal("exit reported while output was on its way")
	case <-time.After(50 * time.Millisecond):
	}
	more <- false
	select {
	case <-reported:
	case <-time.After(time.Minute):
		t.Fatal("exit not reported once the output arrived")
	}
}

// TestAfterOutputStalls: output nobody reads (`ctr run -d` left) holds the exit for
// outputStall; a reader that keeps reading holds it longer, up to outputDrainTimeout.
func TestAfterOutputStalls(t *testing.T) {
	defer func(d, st time.Duration) { outputDrainTimeout, outputStall = d, st }(outputDrainTimeout, outputStall)
	outputDrainTimeout, outputStall = time.Minute, 20*time.Millisecond
	s := drainService()
	r, w := outputPipe(t)
	p := &fakeProcess{}
	s.outputs[p] = &outputDrain{pipes: watchOf(w)}
	if _, err := w.Write([]byte("never read\n")); err != nil {
		t.Fatal(err)
	}
	reported := make(chan struct{})
	s.afterOutput("c", p, func() { close(reported) })
	select {
	case <-reported:
	case <-time.After(time.Minute):
		t.Fatal("exit held though nothing moved")
	}
	io.ReadFull(r, make([]byte, 11))

	// A slow reader: a byte every 5 ms, 60 bytes (300 ms, longer than a stall): the exit
	// waits for all of it.
	outputStall = 200 * time.Millisecond
	if _, err := w.Write(make([]byte, 60)); err != nil {
		t.Fatal(err)
	}
	s.outputs[p] = &outputDrain{pipes: watchOf(w)}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for i := 0; i < 60; i++ {
			time.Sleep(5 * time.Millisecond)
			if _, err := r.Read(make([]byte, 1)); err != nil {
				return
			}
		}
	}()
	probe := watchOf(w)
	defer probe.Close()
	left := -1
	reported = make(chan struct{})
	s.afterOutput("c", p, func() { left = probe.Unread(); close(reported) })
	<-reported
	<-readerDone
	if left != 0 {
		t.Fatalf("exit reported with %d of 60 bytes unread by a reader still reading", left)
	}

	// The overall bound.
	outputDrainTimeout = 20 * time.Millisecond
	outputStall = time.Minute
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	s.outputs[p] = &outputDrain{pipes: watchOf(w)}
	reported = make(chan struct{})
	s.afterOutput("c", p, func() { close(reported) })
	select {
	case <-reported:
	case <-time.After(time.Minute):
		t.Fatal("exit held past the drain timeout")
	}
}
