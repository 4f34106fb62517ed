package oci

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/containerd/containerd/v2/core/mount"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/store"

	"github.com/warmshim/warm/internal/hwbreak"
	"github.com/warmshim/warm/internal/testenv"
)

// These tests drive real runc and CRIU (no containerd): restore a template into a
// frozen sandbox, adopt it into another container id and cgroup, thaw it, and destroy
// it, on whichever cgroup version the host has. They need root, runc, criu and
// busybox (WARM_INTEGRATION=1 turns their absence into a failure).

func needStack(t *testing.T) (runcPath string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	runcPath, err := exec.LookPath("runc")
	if err != nil {
		missing = append(missing, "runc in PATH")
	}
	if _, err := exec.LookPath("criu"); err != nil {
		missing = append(missing, "criu in PATH")
	}
	if _, err := os.Stat(busybox()); err != nil {
		missing = append(missing, "/bin/busybox (busybox-static)")
	}
	if len(missing) > 0 {
		testenv.Missing(t, strings.Join(missing, ", "))
	}
	// As warm's start action does for its shim: CRIU_FAULT=130 where the host's
	// hardware breakpoints do not fire, or every dump and restore here would hang.
	if r := hwbreak.Apply(hwbreak.TestCacheDir()); r.Err != nil {
		t.Logf("CRIU keeps its default breakpoints: %v", r.Err)
	}
	return runcPath
}

// hybridV2 reports whether the test runs on a hybrid host's cgroup2 hierarchy mounted at
// /sys/fs/cgroup (scripts/hybrid-v2-check.sh sets WARM_TEST_HYBRID_V2=1): cgroup v2
// paths, but without the controllers cgroup v1 holds. It fails the test if the variable
// is set anywhere else.
func hybridV2(t *testing.T) bool {
	t.Helper()
	if os.Getenv("WARM_TEST_HYBRID_V2") != "1" {
		return false
	}
	ctrl, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	if !unified() || err != nil || strings.Contains(string(ctrl), "memory") {
		t.Fatalf("WARM_TEST_HYBRID_V2=1, but /sys/fs/cgroup is not a cgroup2 hierarchy without a memory controller (controllers %q, %v)", ctrl, err)
	}
	return true
}

func busybox() string {
	if p := os.Getenv("WARM_BUSYBOX"); p != "" {
		return p
	}
	return "/bin/busybox"
}

// bindRootfs gives every sandbox a bind mount of one busybox tree.
type bindRootfs struct{ dir string }

func (b bindRootfs) Prepare(context.Context, string, *store.Template) ([]mount.Mount, error) {
	return []mount.Mount{{Type: "bind", Source: b.dir, Options: []string{"rbind", "rw"}}}, nil
}
func (b bindRootfs) Remove(context.Context, string) error { return nil }

func busyboxTree(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(busybox())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "sleep", "echo", "cat", "touch", "hostname", "ls"} {
		_ = os.Symlink("busybox", filepath.Join(dir, "bin", a))
	}
}

func baseRuncSpec(t *testing.T, runcPath, bundle string) *specs.Spec {
	t.Helper()
	cmd := exec.Command(runcPath, "spec", "--bundle", bundle)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v %s", err, out)
	}
	var sp specs.Spec
	data, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err := json.Unmarshal(data, &sp); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(bundle, "config.json"))
	sp.Process.Terminal = false
	sp.Root.Readonly = false
	sp.Hostname = "template"
	return &sp
}

func writeSpec(t *testing.T, bundle string, sp *specs.Spec) {
	t.Helper()
	data, _ := json.Marshal(sp)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// templateBundle is what a sandbox test needs before its template runs: a directory
// under /tmp (removed at the end), a runc root, a busybox tree, a cgroup tag, and the
// template's bundle with that tree bind-mounted as its rootfs and runc's default spec.
type templateBundle struct {
	dir, root, tree, tag, bundle string
	r                            *runc.Runc
	spec                         *specs.Spec
}

func newTemplateBundle(t *testing.T, runcPath string) *templateBundle {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "warm-oci-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b := &templateBundle{dir: dir, root: filepath.Join(dir, "runc"), tree: filepath.Join(dir, "tree"),
		tag: fmt.Sprintf("warmocitest%d", os.Getpid()), bundle: filepath.Join(dir, "tmpl")}
	busyboxTree(t, b.tree)
	b.r = &runc.Runc{Command: runcPath, Root: b.root}
	if err := os.MkdirAll(filepath.Join(b.bundle, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := mount.All([]mount.Mount{{Type: "bind", Source: b.tree, Options: []string{"rbind", "rw"}}}, filepath.Join(b.bundle, "rootfs")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mount.UnmountAll(filepath.Join(b.bundle, "rootfs"), 0) })
	b.spec = baseRuncSpec(t, runcPath, b.bundle)
	return b
}

// run starts the template container "tmpl" with args in cgroup /<tag>/tmpl (deleted at
// the end) and returns its stdin and stdout.
func (b *templateBundle) run(t *testing.T, args ...string) (stdin io.WriteCloser, stdout io.ReadCloser) {
	t.Helper()
	b.spec.Process.Args = args
	b.spec.Linux.CgroupsPath = "/" + b.tag + "/tmpl"
	writeSpec(t, b.bundle, b.spec)
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	t.Cleanup(func() { inW.Close(); outR.Close() })
	ctx := context.Background()
	if _, err := b.r.Run(ctx, "tmpl", b.bundle, &runc.CreateOpts{IO: &pipeIO{in: inR, out: outW, err: outW}, Detach: true}); err != nil {
		t.Fatalf("runc run: %v", err)
	}
	inR.Close()
	outW.Close()
	t.Cleanup(func() { _ = b.r.Delete(ctx, "tmpl", &runc.DeleteOpts{Force: true}) })
	return inW, outR
}

func TestSandboxRestoreAdoptThaw(t *testing.T) {
	runcPath := needStack(t)
	ctx := context.Background()
	b := newTemplateBundle(t, runcPath)
	dir, root, tree, tag, r := b.dir, b.root, b.tree, b.tag, b.r

	// The template: a counter that answers lines on stdin with its state.
	inW, outR := b.run(t, "sh", "-c", `seed=$$$RANDOM; echo noise; while read l; do echo "$l seed=$seed host=$(hostname)"; done`)
	sp := b.spec
	tmplOut := bufio.NewReader(outR)
	readLine := func(rd *bufio.Reader) string {
		t.Helper()
		type res struct {
			s   string
			err error
		}
		ch := make(chan res, 1)
		go func() { s, err := rd.ReadString('\n'); ch <- res{s, err} }()
		select {
		case x := <-ch:
			if x.err != nil {
				t.Fatalf("read: %v", x.err)
			}
			return strings.TrimSpace(x.s)
		case <-time.After(20 * time.Second):
			t.Fatal("no line within 20s")
		}
		return ""
	}
	if l := readLine(tmplOut); l != "noise" {
		t.Fatalf("template said %q", l)
	}
	fmt.Fprintln(inW, "hi")
	tmplSeed := strings.Fields(readLine(tmplOut))[1]

	st, err := store.New(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	tm, err := st.Commit(store.Meta{Name: "echo", Namespace: "t", Spec: sp}, func(images string) error {
		return r.Checkpoint(ctx, "tmpl", &runc.CheckpointOpts{ImagePath: images, WorkDir: filepath.Join(dir, "ckwork")}, runc.LeaveRunning)
	})
	if err != nil {
		t.Fatalf("checkpoint: %v (%s)", err, LastLines(filepath.Join(dir, "ckwork", "dump.log"), 5))
	}

	sbs := &Sandboxes{Runc: runcPath, Root: root, Dir: filepath.Join(dir, "sandboxes"), CgroupParent: "/" + tag + "-pool", Rootfs: bindRootfs{tree}}
	defer sbs.RemoveCgroupParent()
	h, mem, err := sbs.Restore(ctx, tm, "sb1")
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	sb := h.(*Sandbox)
	if mem <= 0 {
		t.Errorf("memory %d", mem)
	}
	if err := sb.CheckFresh(); err != nil {
		t.Fatalf("a template that waits for input: %v", err)
	}
	if s, err := r.State(ctx, "sb1"); err != nil || s.Status != "paused" {
		t.Fatalf("sandbox state %+v %v: want paused", s, err)
	}

	// Adopt into container "c1" with its own cgroup, a memory limit and a hostname.
	cb := filepath.Join(dir, "c1")
	if err := os.MkdirAll(cb, 0o700); err != nil {
		t.Fatal(err)
	}
	req := *sp
	req.Hostname = "adopted"
	req.Linux = &specs.Linux{}
	*req.Linux = *sp.Linux
	req.Linux.CgroupsPath = "/" + tag + "/c1"
	limit := int64(64 << 20)
	if hybridV2(t) {
		t.Log("a hybrid host's cgroup2 hierarchy has no memory controller: no memory limit requested")
	} else {
		req.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}
	}
	// Hooks get the state runc gives them: createRuntime "creating", poststart (at
	// create, as runc runs them) "created".
	hook := func(name string) specs.Hook {
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + filepath.Join(dir, name+".json")}}
	}
	req.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{hook("createRuntime")}, Poststart: []specs.Hook{hook("poststart")}}
	cInR, cInW, _ := os.Pipe()
	cOutR, cOutW, _ := os.Pipe()
	cErrR, cErrW, _ := os.Pipe()
	defer cInW.Close()
	defer cOutR.Close()
	defer cErrR.Close()
	if err := sbs.Adopt(ctx, sb, AdoptRequest{ContainerID: "c1", Bundle: cb, Spec: &req, Stdin: cInR, Stdout: cOutW, Stderr: cErrW}); err != nil {
		t.Fatalf("adopt: %v", err)
	}
	if s, err := r.State(ctx, "c1"); err != nil || s.Status != "paused" || s.Pid != sb.Pid {
		t.Fatalf("adopted state %+v %v: want c1 paused with pid %d", s, err, sb.Pid)
	}
	for name, want := range map[string]string{"createRuntime": "creating", "poststart": "created"} {
		var st specs.State
		data, err := os.ReadFile(filepath.Join(dir, name+".json"))
		if err != nil || json.Unmarshal(data, &st) != nil || string(st.Status) != want || st.ID != "c1" || st.Pid != sb.Pid {
			t.Fatalf("%s hook got %q (%v): want status %s of c1", name, data, err, want)
		}
	}
	if _, err := r.State(ctx, "sb1"); err == nil {
		t.Fatal("the sandbox's old runc id still exists")
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", sb.Pid))
	if !strings.Contains(string(cg), "/"+tag+"/c1") {
		t.Fatalf("process not in the requested cgroup:\n%s", cg)
	}
	if err := sbs.Thaw(ctx, sb); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(cOutR)
	fmt.Fprintln(cInW, "adopted")
	got := strings.Fields(readLine(out))
	if len(got) != 3 || got[1] != tmplSeed || got[2] != "host=adopted" {
		t.Fatalf("adopted sandbox said %v; want the template's %s and host=adopted (and no earlier noise)", got, tmplSeed)
	}
	// runc knows it as c1: ps, exec, pause, resume, then kill and delete.
	if ps, err := r.Ps(ctx, "c1"); err != nil || len(ps) == 0 {
		t.Fatalf("ps %v %v", ps, err)
	}
	if err := r.Pause(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := r.Resume(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := r.Kill(ctx, "c1", 9, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if s, err := r.State(ctx, "c1"); err == nil && s.Status == "stopped" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.Delete(ctx, "c1", &runc.DeleteOpts{Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := sbs.Destroy(ctx, sb); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sb.Bundle); !os.IsNotExist(err) {
		t.Fatal("sandbox bundle left behind")
	}

	// A second sandbox destroyed while frozen leaves nothing either.
	h2, _, err := sbs.Restore(ctx, tm, "sb2")
	if err != nil {
		t.Fatalf("restore 2: %v", err)
	}
	if err := sbs.Destroy(ctx, h2); err != nil {
		t.Fatal(err)
	}
	if _, err := r.State(ctx, "sb2"); err == nil {
		t.Fatal("destroyed sandbox still known to runc")
	}
	// Adopted into a cgroup that is not its sibling, the sandbox's processes migrate to a
	// new cgroup: it gets the device rules runc gave the sandbox (a new v1 cgroup has its
	// parent's, a new v2 one none).
	defer removeCgroupEverywhere("/" + tag + "-other")
	h3, _, err := sbs.Restore(ctx, tm, "sb3")
	if err != nil {
		t.Fatalf("restore 3: %v", err)
	}
	sb3 := h3.(*Sandbox)
	cb3 := filepath.Join(dir, "c3")
	if err := os.MkdirAll(cb3, 0o700); err != nil {
		t.Fatal(err)
	}
	req3 := *sp
	req3.Linux = &specs.Linux{}
	*req3.Linux = *sp.Linux
	req3.Linux.CgroupsPath = "/" + tag + "-other/c3"
	req3.Hostname = "" // a cold start's UTS namespace would have the host's name
	o3R, o3W, _ := os.Pipe()
	e3R, e3W, _ := os.Pipe()
	defer o3R.Close()
	defer e3R.Close()
	if err := sbs.Adopt(ctx, sb3, AdoptRequest{ContainerID: "c3", Bundle: cb3, Spec: &req3, Stdout: o3W, Stderr: e3W}); err != nil {
		t.Fatalf("adopt c3: %v", err)
	}
	checkDeviceRules(t, "/"+tag+"/tmpl", "/"+tag+"-other/c3")
	var uts unix.Utsname
	if err := inNamespace(sb3.Pid, "uts", func() error { return unix.Uname(&uts) }); err != nil {
		t.Fatal(err)
	}
	if host, _ := os.Hostname(); unix.ByteSliceToString(uts.Nodename[:]) != host {
		t.Fatalf("adopted without a hostname, the sandbox is %q, not the host's %q", unix.ByteSliceToString(uts.Nodename[:]), host)
	}
	if err := r.Delete(ctx, "c3", &runc.DeleteOpts{Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := sbs.Destroy(ctx, sb3); err != nil {
		t.Fatal(err)
	}

	// Adopted, then its Create failed (say the pid file could not be written): Abandon
	// kills it and frees the container's id in runc, so a cold retry can take it.
	h4, _, err := sbs.Restore(ctx, tm, "sb4")
	if err != nil {
		t.Fatalf("restore 4: %v", err)
	}
	sb4 := h4.(*Sandbox)
	req4 := req3
	req4.Linux = &specs.Linux{}
	*req4.Linux = *sp.Linux
	req4.Linux.CgroupsPath = "/" + tag + "/c4"
	o4R, o4W, _ := os.Pipe()
	e4R, e4W, _ := os.Pipe()
	defer o4R.Close()
	defer e4R.Close()
	if err := sbs.Adopt(ctx, sb4, AdoptRequest{ContainerID: "c4", Bundle: filepath.Join(dir, "c4"), Spec: &req4, Stdout: o4W, Stderr: e4W}); err != nil {
		t.Fatalf("adopt c4: %v", err)
	}
	sbs.Abandon(ctx, sb4)
	if _, err := r.State(ctx, "c4"); err == nil {
		t.Fatal("runc still knows the abandoned container c4")
	}
	if err := syscall.Kill(sb4.Pid, 0); err == nil {
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", sb4.Pid)); !strings.Contains(string(st), ") Z") {
			t.Fatalf("the abandoned sandbox's process %d is alive: %s", sb4.Pid, st)
		}
	}
	if err := sbs.Destroy(ctx, sb4); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sb4.Bundle); !os.IsNotExist(err) {
		t.Fatal("abandoned sandbox's bundle left behind")
	}
	_ = r.Delete(ctx, "tmpl", &runc.DeleteOpts{Force: true})
	for _, p := range []string{"/" + tag, "/" + tag + "-pool"} {
		removeCgroupEverywhere(p)
	}
}

// checkDeviceRules fails unless the cgroup adopted has the device rules of the cgroup
// runc made for the template: v1 the same devices.list (not its parent's allow-all);
// v2 a device program attached.
func checkDeviceRules(t *testing.T, runcMade, adopted string) {
	t.Helper()
	if unified() {
		fd, err := unix.Open(filepath.Join("/sys/fs/cgroup", adopted), unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if n, err := attachedDevicePrograms(fd); err != nil || n == 0 {
			t.Fatalf("cgroup %s: %d device programs attached (%v): its processes may use any device", adopted, n, err)
		}
		return
	}
	want, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/devices", runcMade, "devices.list"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/devices", adopted, "devices.list"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(want), "a *:* rwm") {
		t.Fatalf("runc's own cgroup allows every device: nothing to compare\n%s", want)
	}
	sorted := func(b []byte) string {
		l := strings.Fields(strings.ReplaceAll(string(b), " ", "_"))
		slices.Sort(l)
		return strings.Join(l, "\n")
	}
	if sorted(got) != sorted(want) {
		t.Fatalf("adopted cgroup %s devices.list:\n%s\nwant runc's (%s):\n%s", adopted, got, runcMade, want)
	}
}

// attachedDevicePrograms counts the BPF_CGROUP_DEVICE programs attached to a cgroup
// (BPF_PROG_QUERY).
func attachedDevicePrograms(cgroupFD int) (int, error) {
	const bpfProgQuery, bpfCgroupDevice = 16, 6
	ids := make([]uint32, 64)
	attr := struct {
		targetFD    uint32
		attachType  uint32
		queryFlags  uint32
		attachFlags uint32
		progIDs     uint64
		progCnt     uint32
		_           uint32
	}{targetFD: uint32(cgroupFD), attachType: bpfCgroupDevice, progIDs: uint64(uintptr(unsafe.Pointer(&ids[0]))), progCnt: uint32(len(ids))}
	_, _, errno := unix.Syscall(unix.SYS_BPF, bpfProgQuery, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(ids)
	if errno != 0 {
		return 0, errno
	}
	return int(attr.progCnt), nil
}

func removeCgroupEverywhere(p string) {
	if unified() {
		removeCgroup(filepath.Join("/sys/fs/cgroup", p))
		return
	}
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range entries {
		removeCgroup(filepath.Join("/sys/fs/cgroup", e.Name(), p))
	}
}

// TestSandboxRanBeforeFreeze: a restored application that writes before the shim freezes
// it has run past its template's state, and the restore fails with ErrRanBeforeFreeze
// (the pool then destroys it and restores another). The template writes without pause,
// so it always does.
func TestSandboxRanBeforeFreeze(t *testing.T) {
	runcPath := needStack(t)
	ctx := context.Background()
	b := newTemplateBundle(t, runcPath)
	dir, root, tree, tag, r, tb, sp := b.dir, b.root, b.tree, b.tag, b.r, b.bundle, b.spec
	defer func() {
		for _, p := range []string{"/" + tag, "/" + tag + "-pool"} {
			removeCgroupEverywhere(p)
		}
	}()
	sp.Process.Args = []string{"sh", "-c", `while :; do echo tick; done`}
	sp.Linux.CgroupsPath = "/" + tag + "/tmpl"
	writeSpec(t, tb, sp)
	outR, outW, _ := os.Pipe()
	defer outR.Close()
	if _, err := r.Run(ctx, "tmpl", tb, &runc.CreateOpts{IO: &pipeIO{out: outW, err: outW}, Detach: true}); err != nil {
		t.Fatalf("runc run: %v", err)
	}
	outW.Close()
	defer r.Delete(ctx, "tmpl", &runc.DeleteOpts{Force: true})
	go func() { _, _ = io.Copy(io.Discard, outR) }()
	st, err := store.New(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	tm, err := st.Commit(store.Meta{Name: "ticker", Namespace: "t", Spec: sp}, func(images string) error {
		return r.Checkpoint(ctx, "tmpl", &runc.CheckpointOpts{ImagePath: images, WorkDir: filepath.Join(dir, "ckwork")}, runc.LeaveRunning)
	})
	if err != nil {
		t.Fatalf("checkpoint: %v (%s)", err, LastLines(filepath.Join(dir, "ckwork", "dump.log"), 5))
	}
	_ = r.Kill(ctx, "tmpl", int(syscall.SIGKILL), &runc.KillOpts{All: true})

	sbs := &Sandboxes{Runc: runcPath, Root: root, Dir: filepath.Join(dir, "sandboxes"), CgroupParent: "/" + tag + "-pool", Rootfs: bindRootfs{tree}}
	defer sbs.RemoveCgroupParent()
	h, _, err := sbs.Restore(ctx, tm, "sb1")
	if h != nil {
		defer func() {
			if derr := sbs.Destroy(ctx, h); derr != nil {
				t.Errorf("destroy: %v", derr)
			}
		}()
	}
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if err := h.(*Sandbox).CheckFresh(); !errors.Is(err, ErrRanBeforeFreeze) {
		t.Fatalf("an application that writes at once: %v, want ErrRanBeforeFreeze", err)
	}
}

// TestSandboxAdoptMovesSubCgroups: a sandbox whose processes are not all in its top
// cgroup (the application made a sub-cgroup) is adopted into a cgroup that is not a
// sibling: every process migrates, into the same sub-cgroup of the new one, and thaws
// with it; nothing stays in the sandbox's old cgroups.
func TestSandboxAdoptMovesSubCgroups(t *testing.T) {
	runcPath := needStack(t)
	ctx := context.Background()
	b := newTemplateBundle(t, runcPath)
	dir, root, tree, tag, r := b.dir, b.root, b.tree, b.tag, b.r
	// After the template container is deleted (a cleanup b.run registers later, which
	// runs first).
	t.Cleanup(func() {
		for _, p := range []string{"/" + tag, "/" + tag + "-pool", "/" + tag + "-other"} {
			removeCgroupEverywhere(p)
		}
	})
	_, outR := b.run(t, "sh", "-c", `sleep 1000 & echo started; while read l; do echo "$l"; done`)
	sp := b.spec
	if l, err := bufio.NewReader(outR).ReadString('\n'); err != nil || l != "started\n" {
		t.Fatalf("template said %q %v", l, err)
	}
	st, err := store.New(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	tm, err := st.Commit(store.Meta{Name: "n", Namespace: "t", Spec: sp}, func(images string) error {
		return r.Checkpoint(ctx, "tmpl", &runc.CheckpointOpts{ImagePath: images, WorkDir: filepath.Join(dir, "ckwork")}, runc.LeaveRunning)
	})
	if err != nil {
		t.Fatal(err)
	}
	sbs := &Sandboxes{Runc: runcPath, Root: root, Dir: filepath.Join(dir, "sandboxes"), CgroupParent: "/" + tag + "-pool", Rootfs: bindRootfs{tree}}
	defer sbs.RemoveCgroupParent()
	h, _, err := sbs.Restore(ctx, tm, "sb1")
	if err != nil {
		t.Fatal(err)
	}
	sb := h.(*Sandbox)
	pids, _ := readPids(filepath.Join(pickProcsDir(sb.cgroupPaths), "cgroup.procs"))
	child := 0
	for _, p := range pids {
		if p != sb.Pid {
			child = p
		}
	}
	if child == 0 {
		t.Fatalf("no child process among %v", pids)
	}
	// The application's own sub-cgroup, in every hierarchy (on cgroup v2 one without
	// controllers: its parent keeps processes).
	for k, p := range sb.cgroupPaths {
		if k == "" && !unified() {
			continue
		}
		sub := filepath.Join(p, "sub")
		if err := os.Mkdir(sub, 0o755); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
		if k == "cpuset" {
			if err := initCpuset(sub); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(sub, "cgroup.procs"), []byte(strconv.Itoa(child)), 0); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	var req specs.Spec
	data, _ := json.Marshal(sp)
	_ = json.Unmarshal(data, &req)
	req.Linux.CgroupsPath = "/" + tag + "-other/c5"
	cb := filepath.Join(dir, "c5")
	if err := os.MkdirAll(cb, 0o700); err != nil {
		t.Fatal(err)
	}
	oR, oW, _ := os.Pipe()
	eR, eW, _ := os.Pipe()
	defer oR.Close()
	defer eR.Close()
	if err := sbs.Adopt(ctx, sb, AdoptRequest{ContainerID: "c5", Bundle: cb, Spec: &req, Stdout: oW, Stderr: eW}); err != nil {
		t.Fatalf("adopt: %v", err)
	}
	defer sbs.Destroy(ctx, sb)
	defer r.Delete(ctx, "c5", &runc.DeleteOpts{Force: true})
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", child))
	if strings.Contains(string(cg), tag+"-pool/") || !strings.Contains(string(cg), tag+"-other/c5/sub") {
		t.Fatalf("the child process is not in the new cgroup's sub-cgroup:\n%s", cg)
	}
	if err := sbs.Thaw(ctx, sb); err != nil {
		t.Fatal(err)
	}
	if unified() {
		if ev, _ := os.ReadFile(filepath.Join(cgroupV2Root, tag+"-other", "c5", "sub", "cgroup.events")); !strings.Contains(string(ev), "frozen 0") {
			t.Fatalf("the sub-cgroup's events after the thaw:\n%s", ev)
		}
	} else if fz, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer", tag+"-other", "c5", "sub", "freezer.state")); strings.TrimSpace(string(fz)) != "THAWED" {
		t.Fatalf("the sub-cgroup is %s after the thaw", fz)
	}
}
