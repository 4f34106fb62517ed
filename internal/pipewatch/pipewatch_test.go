package pipewatch

import (
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestUnread(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var ofW, ofR, ofProc Watch
	ofW.AddFile(w)
	ofR.AddFile(r)
	ofProc.AddProcess(os.Getpid(), int(w.Fd()), int(r.Fd())) // one pipe, watched once
	for i, x := range []*Watch{&ofW, &ofR, &ofProc} {
		if x.Len() != 1 {
			t.Fatalf("watch %d holds %d handles, want 1", i, x.Len())
		}
		defer x.Close()
	}
	if _, err := w.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	for i, x := range []*Watch{&ofW, &ofR, &ofProc} {
		if n := x.Unread(); n != 5 {
			t.Fatalf("watch %d: unread %d, want 5", i, n)
		}
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	if n := ofW.Unread(); n != 2 {
		t.Fatalf("unread %d after reading 3 of 5, want 2", n)
	}
	// The watches are readers that never read: the pipe's reader still gets everything,
	// then its end of file once the writer closes.
	w.Close()
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != "lo" {
		t.Fatalf("read %q, %v; want \"lo\"", rest, err)
	}
	ofW.Close()
	ofW.Close()
	if n := ofW.Unread(); n != 0 {
		t.Fatalf("a closed watch reports %d", n)
	}
	var nilWatch *Watch
	if nilWatch.Unread() != 0 || nilWatch.Len() != 0 {
		t.Fatal("nil watch")
	}
	nilWatch.Close()
}

func TestFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	var w Watch
	w.AddFIFO(path) // no writer yet: must not block
	defer w.Close()
	if w.Len() != 1 {
		t.Fatal("FIFO not watched")
	}
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	wr, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wr.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if n := w.Unread(); n != 3 {
		t.Fatalf("unread %d, want 3", n)
	}
	wr.Close()
	if b, err := io.ReadAll(r); string(b) != "abc" || err != nil {
		t.Fatalf("reader got %q, %v", b, err)
	}
	if n := w.Unread(); n != 0 {
		t.Fatalf("unread %d after the read", n)
	}
}

func TestNotAPipe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var w Watch
	w.AddFile(f)
	w.AddProcess(os.Getpid(), int(f.Fd()))
	w.AddProcess(1<<30, 1)
	w.AddFIFO(path)
	w.AddFIFO("")
	w.AddFile(nil)
	if w.Len() != 0 {
		t.Fatalf("%d handles on things that are not pipes", w.Len())
	}
}
