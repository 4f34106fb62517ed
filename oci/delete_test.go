package oci

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestDeleteContainerGone: runc is not run for a container whose state directory is
// gone; it is for one whose directory is there.
func TestDeleteContainerGone(t *testing.T) {
	root := t.TempDir()
	r := &runc.Runc{Command: filepath.Join(t.TempDir(), "no-runc"), Root: root}
	if err := DeleteContainer(context.Background(), r, "gone"); err != nil {
		t.Fatalf("a container runc no longer knows: %v", err)
	}
	if err := os.Mkdir(filepath.Join(root, "here"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := DeleteContainer(context.Background(), r, "here"); err == nil {
		t.Fatal("runc was not run for a container whose state is there")
	}
}

// TestFailedThawLeavesSandboxUnstarted: a Thaw whose freezer write fails does not mark
// the sandbox started, so the kill and delete that follow thaw it again.
func TestFailedThawLeavesSandboxUnstarted(t *testing.T) {
	sb := &Sandbox{ID: "x", ContainerID: "c", cgroupPaths: map[string]string{"freezer": "/nonexistent/warm-test", "": "/nonexistent/warm-test"}}
	var s Sandboxes
	if err := s.Thaw(context.Background(), sb); err == nil {
		t.Fatal("thaw of a cgroup that does not exist succeeded")
	}
	if sb.Started() {
		t.Error("failed Thaw marked the sandbox started")
	}
}

// TestAdoptRefusesDeadSandbox: a sandbox whose process is gone is not adopted.
func TestAdoptRefusesDeadSandbox(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	sb := &Sandbox{ID: "x", Pid: cmd.Process.Pid, Bundle: t.TempDir()}
	s := Sandboxes{Runc: "/bin/false", Root: t.TempDir()}
	sp := &specs.Spec{Linux: &specs.Linux{CgroupsPath: "/ns/c1"}}
	err := s.Adopt(context.Background(), sb, AdoptRequest{ContainerID: "c1", Spec: sp})
	if err == nil || !strings.Contains(err.Error(), "has exited") {
		t.Fatalf("adopt of a dead sandbox: %v", err)
	}
}
