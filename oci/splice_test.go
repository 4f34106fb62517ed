package oci

import (
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/internal/pipewatch"
)

func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func blockingPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(fds[0]), "r"), os.NewFile(uintptr(fds[1]), "w")
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// TestOutputPending follows an adopted sandbox's output from its own pipe, through the
// pump, into the container's pipe, and until the shim's copy (here the test) has read
// it: only then is nothing pending, and the container's exit may be reported.
func TestOutputPending(t *testing.T) {
	inR, inW := pipe(t)
	outR, outW := pipe(t)
	errR, errW := pipe(t)
	sb := &Sandbox{stdin: inW, stdout: outR, stderr: errR}
	defer inR.Close()
	cOutR, cOutW := pipe(t) // the container's stdout pipe (the runc package's)
	cErrR, cErrW := pipe(t)
	sb.splice(AdoptRequest{ContainerID: "c", Stdout: cOutW, Stderr: cErrW})
	if !sb.OutputPending() {
		t.Fatal("nothing pending while the sandbox's processes may still write")
	}
	if _, err := outW.Write([]byte("done\n")); err != nil {
		t.Fatal(err)
	}
	// The sandbox's processes are gone: the pumps reach the end of their output.
	outW.Close()
	errW.Close()
	<-sb.pumpsDone
	if !sb.OutputPending() {
		t.Fatal("nothing pending while the container's pipe holds unread output")
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(cOutR, buf); err != nil || string(buf) != "done\n" {
		t.Fatalf("container read %q, %v", buf, err)
	}
	if sb.OutputPending() {
		t.Fatal("output pending after the container's pipe was read")
	}
	// The watches do not hold the container's pipes open: their reader sees the end.
	if n, err := cOutR.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("container stdout after the pump: %d, %v; want EOF", n, err)
	}
	if n, err := cErrR.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("container stderr after the pump: %d, %v; want EOF", n, err)
	}
}

// TestStopPumps: a pump blocked on a full container pipe that nobody reads (the client
// went away) is stopped by stopPumps, so Destroy, and with it the container's Delete,
// does not hang.
func TestStopPumps(t *testing.T) {
	inR, inW := pipe(t)
	outR, outW := pipe(t)
	errR, errW := pipe(t)
	defer inR.Close()
	sb := &Sandbox{stdin: inW, stdout: outR, stderr: errR}
	// Nobody reads the container's stdout; its pipe is in blocking mode, as runc's
	// stdio reaches the shim.
	_, cOutW := blockingPipe(t)
	_, cErrW := blockingPipe(t)
	sb.splice(AdoptRequest{ContainerID: "c", Stdout: cOutW, Stderr: cErrW})
	go func() {
		// More than the two pipes hold; fails once the pump's end is closed.
		_, _ = outW.Write(make([]byte, 1<<20))
		outW.Close()
	}()
	errW.Close()
	for sb.OutputPending() && pipewatch.UnreadIn(outR) == 0 {
		time.Sleep(time.Millisecond) // until the writer filled the pipes
	}
	done := make(chan struct{})
	go func() { sb.stopPumps(20 * time.Millisecond); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("stopPumps did not stop a pump blocked on a full pipe")
	}
}
