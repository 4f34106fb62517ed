package runctask

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The one line container.go changes in containerd's file.
const (
	upstreamLine = "cg, err = cgroup1.Load(cgroup1.PidPath(pid))"
	warmLine     = "cg, err = cgroup1.Load(pidPath(pid), cgroup1.WithHierarchy(v1Hierarchy)) // warm's change: cgroup1.go"
)

// TestSameAsContainerd: container.go is containerd's runc/container.go of the release in
// go.mod with the package renamed and one line changed. After a containerd upgrade, copy
// the new file and change that line again.
func TestSameAsContainerd(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "list", "-m", "-f", "{{.Dir}}", "github.com/containerd/containerd/v2").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	theirs, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "cmd", "containerd-shim-runc-v2", "runc", "container.go"))
	if err != nil {
		t.Fatal(err)
	}
	ours, err := os.ReadFile("container.go")
	if err != nil {
		t.Fatal(err)
	}
	want := string(theirs)
	if strings.Count(want, upstreamLine) != 1 || strings.Count(want, "\npackage runc\n") != 1 {
		t.Fatalf("containerd's container.go no longer has the line warm changes (%q): copy it again and redo the change", upstreamLine)
	}
	want = strings.Replace(want, "\npackage runc\n", "\npackage runctask\n", 1)
	want = strings.Replace(want, upstreamLine, warmLine, 1)
	if string(ours) != want {
		t.Error("container.go differs from containerd's file with warm's one change: copy it again from the module cache and redo the change")
	}
}
