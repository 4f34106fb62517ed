package oci

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	holdingChild(t) // a child holding 40 MB of its own
	own, _ := privateMemory(self)
	if tree := Memory(self); tree < own+30<<20 {
		t.Fatalf("tree memory %d MB, this process alone %d MB: the child's 40 MB are missing", tree>>20, own>>20)
	}
	if m := Memory(1 << 30); m != 0 {
		t.Fatalf("memory of a process that does not exist: %d", m)
	}
}

// TestCgroupMemory: a container's memory is that of the processes its cgroup lists.
func TestCgroupMemory(t *testing.T) {
	self := os.Getpid()
	child := holdingChild(t)
	dir := t.TempDir()
	paths := map[string]string{"freezer": dir, "": dir}
	procs := func(pids ...int) {
		t.Helper()
		var b strings.Builder
		for _, p := range pids {
			fmt.Fprintln(&b, p)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	own, _ := privateMemory(self)
	kid, _ := privateMemory(child.Process.Pid)
	// Only the listed processes count (this one is not listed).
	procs(child.Process.Pid)
	if m := cgroupMemory(paths, child.Process.Pid); m < 30<<20 || m > kid+kid/2 {
		t.Fatalf("cgroup with the child only: %d MB, the child holds %d MB", m>>20, kid>>20)
	}
	// A process in a sub-cgroup counts; one gone since the listing counts 0.
	procs(self, 1<<30)
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "cgroup.procs"), []byte(fmt.Sprintln(child.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	if m := cgroupMemory(paths, self); m < own+30<<20 {
		t.Fatalf("cgroup of both: %d MB, this process alone %d MB: the child's 40 MB (in a sub-cgroup) are missing", m>>20, own>>20)
	}
	// No cgroup to read: the process tree from pid.
	if m := cgroupMemory(map[string]string{}, self); m < own+30<<20 {
		t.Fatalf("without a cgroup: %d MB, want this process and its child", m>>20)
	}
}

// holdingChild starts a child process that holds 40 MB of its own, and returns once it
// holds 30; it is killed at the end of the test.
func holdingChild(t *testing.T) *exec.Cmd {
	t.Helper()
	child := exec.Command("sh", "-c", `a=$(head -c 40000000 /dev/zero | tr '\0' a); sleep 60`)
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	deadline := time.Now().Add(time.Minute)
	for {
		if n, ok := privateMemory(child.Process.Pid); ok && n >= 30<<20 {
			return child
		}
		if time.Now().After(deadline) {
			t.Fatal("the child never held 30 MB")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
