package test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/warmshim/warm/test/harness"
)

// TestPoolHitUserNamespace: a template made in a user namespace (on a remapped snapshot,
// as ctr run --uidmap and CRI's user-namespace pods make) serves a container with the
// same mappings. The served process's stdio pipes belong to the container's user, as a
// cold container's do (containerd's IoUid and IoGid), so that it can reopen /dev/stdout.
func TestPoolHitUserNamespace(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "userns-" + shortName(t)
	const host = 300000
	ids := []specs.LinuxIDMapping{{ContainerID: 0, HostID: host, Size: 65536}}
	remapped := func(id string, img containerd.Image, _ ...snapshots.Opt) containerd.NewContainerOpts {
		return containerd.WithRemappedSnapshot(id, img, host, host)
	}
	// No runtime options: the shim reads WARM_CONFIG, and WithUIDOwner sends runc's
	// options with IoUid and IoGid, as ctr run --uidmap and CRI do.
	rt := containerd.WithRuntime(harness.Warm, nil)
	owner := []containerd.NewTaskOpts{containerd.WithUIDOwner(host), containerd.WithGIDOwner(host)}
	// echoApp, replying through a reopened /dev/stdout.
	app := []string{"sh", "-c", `seed=$RANDOM$RANDOM; touch /tmp/ready; echo ready; while read line; do echo "reply $line seed=$seed" >/dev/stdout; done`}
	run := func(label string, opts ...oci.SpecOpts) (*echoTask, string) {
		t.Helper()
		c := e.containerWith(remapped, rt, app, append([]oci.SpecOpts{oci.WithUserNamespace(ids, ids)}, opts...)...)
		r, w := io.Pipe()
		t.Cleanup(func() { w.Close() })
		x := &echoTask{c: c, in: w, out: &syncBuffer{}}
		// stderr too: a failed reopen of /dev/stdout says why there.
		x.task, x.exit = e.start(c, streams(r, x.out, x.out), owner...)
		return x, askSeed(t, w, x.out, label)
	}
	maker, seed := run("maker", templateAnn(name, true))
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	waitFor(t, "pool of "+name+" filled", func() bool {
		st, ok, err := ctl.Pool(name)
		return err == nil && ok && st.Frozen >= 1
	})
	x, got := run("served", templateAnn(name, false))
	if got != seed {
		t.Fatalf("served seed %s, the template's %s: not restored from the template", got, seed)
	}
	if st, _, _ := ctl.Pool(name); st.Hits != 1 {
		t.Fatalf("want one hit: %+v", st)
	}
	for fd := 0; fd <= 2; fd++ {
		fi, err := os.Stat(fmt.Sprintf("/proc/%d/fd/%d", x.task.Pid(), fd))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != host || st.Gid != host {
			t.Fatalf("the served process's fd %d is owned by %d:%d, want %d:%d (IoUid, IoGid)", fd, st.Uid, st.Gid, host, host)
		}
	}
	if out := x.out.String(); strings.Contains(out, "ready") {
		t.Fatalf("output from before adoption leaked: %q", out)
	}
	// The images are readable by the container root's group, reached only through the
	// store's root-only directories (a generation's is searchable by it: store.SyncTree).
	tpl, err := os.ReadDir(filepath.Join(cd.WarmState, "templates", cd.Namespace, name))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range tpl {
		if !strings.HasPrefix(g.Name(), "g") || !g.IsDir() {
			continue
		}
		dir := filepath.Join(cd.WarmState, "templates", cd.Namespace, name, g.Name())
		checkOwner(t, dir, host, 0o710)
		checkOwner(t, filepath.Join(dir, "meta.json"), 0, 0o600)
		checkOwner(t, filepath.Join(dir, "images"), host, 0o550)
		checkOwner(t, filepath.Join(dir, "images", "inventory.img"), host, 0o440)
	}
	killAndDelete(t, e, nil, x.task, x.exit)
	// Drained: a restore on create, also in the user namespace.
	if err := ctl.Do("POST", "/pools/"+name+"/drain", nil); err != nil {
		t.Fatal(err)
	}
	y, got := run("restored", templateAnn(name, false))
	if got != seed {
		t.Fatalf("restore-on-create gave seed %s, the template's %s", got, seed)
	}
	if st, _, _ := ctl.Pool(name); st.Misses["pool drained (warmctl pool prewarm refills it)"] != 1 {
		t.Fatalf("want the restore on create counted: %+v", st)
	}
	killAndDelete(t, e, nil, y.task, y.exit)
	killAndDelete(t, e, nil, maker.task, maker.exit)
}

// checkOwner fails unless path is root's, of group gid, with mode perm.
func checkOwner(t *testing.T, path string, gid uint32, perm os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 0 || st.Gid != gid || fi.Mode().Perm() != perm {
		t.Fatalf("%s: owner %d:%d mode %v, want 0:%d %v", path, st.Uid, st.Gid, fi.Mode().Perm(), gid, perm)
	}
}

// TestRecoveryUserNamespace: a container in a user namespace is recovered from its
// checkpoints, which CRIU's restore reads as the container's root, by a restore at the
// crash or from a standby. (Where the kernel tracks dirty memory, the checkpoints are
// incremental and a pre-dump's images are read through "../pre"; this machine's does not.)
func TestRecoveryUserNamespace(t *testing.T) {
	need(t)
	for _, standby := range []string{"off", "on"} {
		t.Run("standby="+standby, func(t *testing.T) { recoverInUserNamespace(t, standby) })
	}
}

func recoverInUserNamespace(t *testing.T, standby string) {
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "")
	const host = 310000
	ids := []specs.LinuxIDMapping{{ContainerID: 0, HostID: host, Size: 65536}}
	remapped := func(id string, img containerd.Image, _ ...snapshots.Opt) containerd.NewContainerOpts {
		return containerd.WithRemappedSnapshot(id, img, host, host)
	}
	c := e.containerWith(remapped, e.runtimeOpt(), counterApp, oci.WithUserNamespace(ids, ids),
		recoveryAnn(map[string]string{"io.containerd.warm.recovery-standby": standby}))
	var out syncBuffer
	task, exit := e.start(c, streams(nil, &out, io.Discard))
	waitFor(t, "two checkpoints", func() bool { return len(checkpointsOf(c.ID())) >= 2 })
	for _, cp := range checkpointsOf(c.ID()) {
		checkOwner(t, cp, host, 0o710)
		checkOwner(t, filepath.Join(cp, "images"), host, 0o550)
	}
	before := len(strings.Fields(out.String()))
	oldPid := task.Pid()
	if standby == "on" {
		waitFor(t, "a recovery standby", func() bool {
			return cd.LogLines("container="+c.ID(), `msg="recovery standby ready"`) >= 1
		})
		if err := syscall.Kill(int(oldPid), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	} else {
		killBetweenCheckpoints(t, c.ID(), oldPid)
	}
	counterContinues(t, &out, before)
	t2, err := c.Task(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if t2.Pid() == oldPid {
		t.Fatal("not restored")
	}
	killAndDelete(t, e, nil, t2, exit)
}
