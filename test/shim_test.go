package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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
			if st, _ := os.ReadDir(filepath.Join(suiteDir, "state", "io.containerd.runtime.v2.task", cd.Namespace, id)); len(st) > 0 {
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
