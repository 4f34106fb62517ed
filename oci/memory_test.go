package oci

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestMemory: a process tree's memory is the pages private to its processes, the
// descendants' included, and no more than their resident memory.
func TestMemory(t *testing.T) {
	self := os.Getpid()
	if m := Memory(self); m <= 0 || m > rss(self) {
		t.Fatalf("memory of this process %d, resident %d", m, rss(self))
	}
	// A child holding 40 MB of its own.
	child := exec.Command("sh", "-c", `a=$(head -c 40000000 /dev/zero | tr '\0' a); sleep 60`)
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	deadline := time.Now().Add(time.Minute)
	for {
		if n, ok := privateMemory(child.Process.Pid); ok && n >= 30<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the child never held 30 MB")
		}
		time.Sleep(10 * time.Millisecond)
	}
	own, _ := privateMemory(self)
	if tree := Memory(self); tree < own+30<<20 {
		t.Fatalf("tree memory %d MB, this process alone %d MB: the child's 40 MB are missing", tree>>20, own>>20)
	}
	if m := Memory(1 << 30); m != 0 {
		t.Fatalf("memory of a process that does not exist: %d", m)
	}
}
