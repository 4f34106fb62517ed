package oci

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
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

// TestKillUnstarted: a never-started sandbox's kill with a signal that ends runc init
// SIGKILLs every process its cgroup lists (and those of the cgroups below), then thaws
// it; 0 and the signals runc init ignores leave it frozen; a sandbox whose process is
// gone is thawed (runc then deletes it) and gets runc's "container not running".
func TestKillUnstarted(t *testing.T) {
	start := func() *exec.Cmd {
		cmd := exec.Command("sleep", "100")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	// A cgroup directory whose freezer files read as thawed once written: pids[0] in it,
	// the others in a cgroup below it.
	cgroup := func(pids ...int) map[string]string {
		dir := t.TempDir()
		var list, below []string
		for i, p := range pids {
			if i == 0 {
				list = append(list, strconv.Itoa(p))
			} else {
				below = append(below, strconv.Itoa(p))
			}
		}
		for path, data := range map[string]string{
			"freezer.state": "FROZEN", "cgroup.freeze": "1", "cgroup.events": "populated 1\nfrozen 0\n",
			"cgroup.procs": strings.Join(list, "\n"), "sub/cgroup.procs": strings.Join(below, "\n"),
		} {
			_ = os.MkdirAll(filepath.Dir(filepath.Join(dir, path)), 0o700)
			if err := os.WriteFile(filepath.Join(dir, path), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return map[string]string{"freezer": dir, "": dir}
	}
	killed := func(cmd *exec.Cmd) bool {
		err := cmd.Wait()
		ee, ok := err.(*exec.ExitError)
		return ok && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
	}
	var s Sandboxes
	a, b := start(), start()
	sb := &Sandbox{ID: "x", ContainerID: "c", Pid: a.Process.Pid, cgroupPaths: cgroup(a.Process.Pid, b.Process.Pid)}
	for _, sig := range []unix.Signal{0, unix.SIGWINCH, unix.SIGCHLD, unix.SIGUSR1, unix.SIGCONT} {
		if err := s.KillUnstarted(context.Background(), sb, sig); err != nil {
			t.Fatalf("signal %d: %v", sig, err)
		}
	}
	if sb.Started() {
		t.Fatal("a signal runc init ignores thawed the sandbox")
	}
	for _, c := range []*exec.Cmd{a, b} {
		if err := unix.Kill(c.Process.Pid, 0); err != nil {
			t.Fatalf("a signal runc init ignores ended a process: %v", err)
		}
	}
	if err := s.KillUnstarted(context.Background(), sb, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !killed(a) || !killed(b) {
		t.Fatal("SIGTERM did not kill every process of the sandbox's cgroups")
	}
	if !sb.Started() {
		t.Fatal("not thawed after the kill")
	}
	c := start()
	paths := cgroup(c.Process.Pid)
	_ = c.Process.Kill()
	_ = c.Wait()
	sb = &Sandbox{ID: "z", ContainerID: "e", Pid: c.Process.Pid, cgroupPaths: paths}
	if err := s.KillUnstarted(context.Background(), sb, unix.SIGTERM); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "container not running") {
		t.Fatalf("kill of a sandbox whose process is gone: %v", err)
	}
	if !sb.Started() {
		t.Fatal("a sandbox whose process died frozen was left frozen (runc deletes no paused container)")
	}
}
