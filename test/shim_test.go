package test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	taskapi "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"google.golang.org/protobuf/proto"

	"github.com/warmshim/warm/internal/procfs"
	"github.com/warmshim/warm/test/harness"
)

// shimPids returns the pids of shim processes of this suite whose -id is id.
func shimPids(t *testing.T, id string) []int {
	t.Helper()
	var pids []int
	for _, sp := range harness.ShimProcesses(cd.Address) {
		for i := 0; i+1 < len(sp.Args); i++ {
			if sp.Args[i] == "-id" && sp.Args[i+1] == id {
				pids = append(pids, sp.Pid)
			}
		}
	}
	return pids
}

// parentPid of a process, from /proc.
func parentPid(t *testing.T, pid uint32) int {
	t.Helper()
	st, err := procfs.ReadStat(int(pid))
	if err != nil {
		t.Fatal(err)
	}
	return st.PPid
}

// TestDeadShimCleanup kills a task's shim; containerd runs the shim's delete action, which
// must remove the container from runc, unmount its rootfs and report the exit as 137.
func TestDeadShimCleanup(t *testing.T) {
	need(t)
	for _, rt := range Runtimes {
		t.Run(rtName(rt), func(t *testing.T) {
			e := newEnv(t, rt)
			c := e.container([]string{"sleep", "1000"})
			ev := e.watch(c.ID())
			task, _ := e.start(c, cio.NullIO)
			pid := task.Pid()
			pids := shimPids(t, c.ID())
			if len(pids) != 1 {
				t.Fatalf("shim processes for %s: %v", c.ID(), pids)
			}
			if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			// containerd publishes the exit the delete action reported and drops the task.
			ev.wait(t, "/tasks/exit")
			waitFor(t, "task removed", func() bool {
				_, err := c.Task(e.ctx, nil)
				return errdefs.IsNotFound(err)
			})
			// Gone, or a zombie waiting for its new parent to reap it.
			waitFor(t, "container process killed", func() bool { return procfs.Dead(int(pid)) })
		})
	}
}

// TestGrouping checks that containers with the same io.containerd.warm.group share one shim
// process, that one without gets its own, and that the shared shim stays up (Shutdown is
// a no-op) while one of its containers remains.
func TestGrouping(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	group := oci.WithAnnotations(map[string]string{"io.containerd.warm.group": "g-" + shortName(t)})
	a := e.container([]string{"sleep", "1000"}, group)
	ta, _ := e.start(a, cio.NullIO)
	b := e.container([]string{"sleep", "1000"}, group)
	tb, bexit := e.start(b, cio.NullIO)
	alone := e.container([]string{"sleep", "1000"})
	tc, _ := e.start(alone, cio.NullIO)

	pa, pb, pc := parentPid(t, ta.Pid()), parentPid(t, tb.Pid()), parentPid(t, tc.Pid())
	if pa != pb {
		t.Fatalf("grouped containers have shims %d and %d, want one", pa, pb)
	}
	if pa == pc {
		t.Fatalf("ungrouped container shares shim %d", pa)
	}
	// Removing a's task makes containerd ask the shim to shut down: it must stay for b.
	if _, err := ta.Delete(e.ctx, withKill()); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(e.ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // containerd's Shutdown call is asynchronous
	if st, err := tb.Status(e.ctx); err != nil || st.Status != "running" {
		t.Fatalf("b after a's delete: %v %v", st.Status, err)
	}
	if err := tb.Kill(e.ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exitOf(t, bexit)
}

// TestBadConfig: a warm config with an unknown key or a bad value fails the Create with a
// message naming the key, and leaves nothing behind (checked by the suite's teardown).
func TestBadConfig(t *testing.T) {
	need(t)
	dir := tempDir(t)
	cases := map[string]struct{ text, want string }{
		"unknown key": {"rnuc = \"runc\"\n", "unknown key rnuc"},
		"bad value":   {"log_level = \"loud\"\n", "key log_level"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".toml")
			if err := os.WriteFile(p, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			id := shortName(t)
			out, err := cd.Ctr(ctx, nil, "run", "--rm", "--runtime", harness.Warm, "--runtime-config-path", p, BusyboxRef, id, "true")
			_, _ = cd.Ctr(ctx, nil, "container", "rm", id)
			if err == nil {
				t.Fatalf("ctr run succeeded with a bad config:\n%s", out)
			}
			if !strings.Contains(out, tc.want) || !strings.Contains(out, p) {
				t.Fatalf("error does not name the key and file (%q, %q):\n%s", tc.want, p, out)
			}
			if st, _ := os.ReadDir(filepath.Join(cd.State, "io.containerd.runtime.v2.task", cd.Namespace, id)); len(st) > 0 {
				t.Fatalf("bundle of the failed container left behind")
			}
		})
	}
}

// TestInfo runs the shim's -info action as containerd does and checks it reports runc's
// features.
func TestInfo(t *testing.T) {
	need(t)
	cmd := exec.Command(cd.Env.Shim, "-info")
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("-info: %v", err)
	}
	var info types.RuntimeInfo
	if err := proto.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != harness.Warm || info.Features == nil {
		t.Fatalf("info %+v", &info)
	}
	v, err := typeurl.UnmarshalAny(info.Features)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := v.(*features.Features)
	if !ok || f.OCIVersionMax == "" || f.Linux == nil || f.Linux.Seccomp == nil || f.Linux.Seccomp.Enabled == nil || !*f.Linux.Seccomp.Enabled {
		t.Fatalf("features %+v: want runc's, with seccomp enabled", v)
	}
}

// frontAlone returns the shim (libexec/warm) and a copy of the front
// (bin/containerd-shim-warm-v2) with no shim beside it: it cannot hand anything on.
func frontAlone(t *testing.T) (shim, alone string) {
	t.Helper()
	shim = filepath.Join(filepath.Dir(cd.Env.Shim), "..", "libexec", "warm", "containerd-shim-warm-v2")
	alone = filepath.Join(t.TempDir(), "bin", "containerd-shim-warm-v2")
	if err := os.MkdirAll(filepath.Dir(alone), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(cd.Env.Shim)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(alone, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return shim, alone
}

// TestDeleteFront: the delete action containerd runs after it deleted a task is
// answered by the front alone, with what the shim answers from the same bundle, while
// one with work left for the shim (runc's state still there) goes to the shim; and
// containerd's own clean-up after the deletion, through the real front, reports no
// failure.
func TestDeleteFront(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	c := e.container([]string{"sh", "-c", "exit 3"})
	task, exitc := e.start(c, cio.NullIO)
	if code := exitOf(t, exitc); code != 3 {
		t.Fatalf("exit %d, want 3", code)
	}
	shim, alone := frontAlone(t)
	// What the delete action reads of the bundle, copied before containerd removes it.
	bundle := filepath.Join(cd.State, "io.containerd.runtime.v2.task", cd.Namespace, c.ID())
	copied := filepath.Join(t.TempDir(), c.ID())
	if err := os.MkdirAll(filepath.Join(copied, "rootfs"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"options.json", "exit.json", "init.pid", "runtime"} {
		data, err := os.ReadFile(filepath.Join(bundle, name))
		if err != nil {
			t.Fatalf("the shim left no %s in the bundle: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(copied, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	deleteAction := func(bin string) ([]byte, string, error) {
		cmd := exec.Command(bin, "-namespace", cd.Namespace, "-address", cd.Address, "-publish-binary", "containerd",
			"-id", c.ID(), "-bundle", copied, "delete")
		cmd.Dir = copied
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		return out, stderr.String(), err
	}
	// runc's state is still there: the shim's to delete.
	if _, errOut, err := deleteAction(alone); err == nil || !strings.Contains(errOut, "run the shim") {
		t.Fatalf("the front answered while runc's state was there (%v, %q)", err, errOut)
	}
	pid := task.Pid()
	if _, err := task.Delete(e.ctx); err != nil {
		t.Fatal(err)
	}
	want, errOut, err := deleteAction(shim)
	if err != nil {
		t.Fatalf("the shim's delete action: %v: %s", err, errOut)
	}
	got, errOut, err := deleteAction(alone)
	if err != nil {
		t.Fatalf("the front did not answer the delete action itself: %v: %s", err, errOut)
	}
	var resp taskapi.DeleteResponse
	if err := proto.Unmarshal(got, &resp); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("front answered %x (%v), the shim %x", got, err, want)
	}
	if resp.Pid != pid || resp.ExitStatus != 3 || resp.ExitedAt.AsTime().IsZero() {
		t.Fatalf("answer %v: want pid %d, exit 3 and a time", &resp, pid)
	}
	// containerd's clean-up of the container, through the real front.
	deadline := time.Now().Add(30 * time.Second)
	for cd.LogLines("cleaning up dead shim", c.ID()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("containerd ran no delete action after the task's deletion")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, bad := range []string{"failed to delete dead shim", "warnings while cleaning up dead shim", "failed to clean up after shim disconnected"} {
		if n := cd.LogLines(bad, c.ID()); n > 0 {
			t.Fatalf("containerd's log: %q for %s", bad, c.ID())
		}
	}
}

// TestStartFront: containerd's start action for a container that joins a running shim
// is answered by the front (bin/containerd-shim-warm-v2) alone, with the answer the shim
// itself gives; every other invocation goes to the shim, which gets the bootstrap
// parameters the front read.
func TestStartFront(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	g := "front-" + shortName(t)
	c := e.container([]string{"sleep", "1000"}, oci.WithAnnotations(map[string]string{"io.containerd.warm.group": g}))
	e.start(c, cio.NullIO)

	shim, alone := frontAlone(t)
	socketDir := filepath.Join(cd.Dir, "s")
	startAction := func(bin, id string, paramsID string, ann map[string]string) ([]byte, string, error) {
		t.Helper()
		bundle := t.TempDir()
		spec, _ := json.Marshal(map[string]any{"ociVersion": "1.2.0", "annotations": ann})
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), spec, 0o600); err != nil {
			t.Fatal(err)
		}
		in, err := proto.Marshal(&bootapi.BootstrapParams{InstanceID: paramsID, Namespace: cd.Namespace,
			ContainerdGrpcAddress: cd.Address, ContainerdTtrpcAddress: cd.Address + ".ttrpc", SocketDir: &socketDir})
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-namespace", cd.Namespace, "-address", cd.Address, "-id", id, "start")
		cmd.Dir = bundle
		cmd.Stdin = bytes.NewReader(in)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		return out, stderr.String(), err
	}
	join := map[string]string{"io.containerd.warm.group": g}
	want, errOut, err := startAction(shim, "probe-1", "probe-1", join)
	if err != nil {
		t.Fatalf("the shim's start action: %v: %s", err, errOut)
	}
	got, errOut, err := startAction(alone, "probe-1", "probe-1", join)
	if err != nil {
		t.Fatalf("the front did not answer a join itself: %v: %s", err, errOut)
	}
	var a, b bootapi.BootstrapResult
	if proto.Unmarshal(want, &a) != nil || proto.Unmarshal(got, &b) != nil || a.Address == "" || !proto.Equal(&a, &b) {
		t.Fatalf("front answered %v, the shim %v", &b, &a)
	}
	// A container of its own is the shim's to start.
	if _, errOut, err := startAction(alone, "probe-2", "probe-2", nil); err == nil || !strings.Contains(errOut, "run the shim") {
		t.Fatalf("the front answered for a container of its own (%v, %q)", err, errOut)
	}
	// Through the real front, the shim gets the parameters the front read: here they
	// disagree with the command line, which only the shim, having read them, can say.
	if _, errOut, err := startAction(cd.Env.Shim, "probe-3", "someone-else", join); err == nil || !strings.Contains(errOut, "do not match command-line arguments") {
		t.Fatalf("the shim did not get the bootstrap parameters (%v, %q)", err, errOut)
	}
}
