package oci

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/internal/testenv"
)

func TestCreateCgroupV2(t *testing.T) {
	root := t.TempDir()
	write := func(p, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// The root delegates everything already; the namespace's cgroup delegates nothing.
	write(filepath.Join(root, "cgroup.controllers"), "cpu memory pids\n")
	write(filepath.Join(root, "cgroup.subtree_control"), "cpu memory pids\n")
	write(filepath.Join(root, "ns", "cgroup.controllers"), "cpu memory pids\n")
	write(filepath.Join(root, "ns", "cgroup.subtree_control"), "memory\n")
	if err := createCgroupV2(root, "/ns/ctr"); err != nil {
		t.Fatal(err)
	}
	if got := read(filepath.Join(root, "cgroup.subtree_control")); got != "cpu memory pids\n" {
		t.Errorf("root subtree_control written though complete: %q", got)
	}
	if got := read(filepath.Join(root, "ns", "cgroup.subtree_control")); got != "+cpu +pids" {
		t.Errorf("namespace subtree_control: wrote %q, want the missing controllers", got)
	}
	if st, err := os.Stat(filepath.Join(root, "ns", "ctr")); err != nil || !st.IsDir() {
		t.Errorf("leaf not created: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "ns", "ctr", "cgroup.subtree_control")); err == nil {
		t.Error("the leaf's subtree_control was written (it holds the processes)")
	}
	// A second creation of a sibling writes nothing more.
	write(filepath.Join(root, "ns", "cgroup.subtree_control"), "cpu memory pids\n")
	if err := createCgroupV2(root, "ns/other"); err != nil {
		t.Fatal(err)
	}
	if got := read(filepath.Join(root, "ns", "cgroup.subtree_control")); got != "cpu memory pids\n" {
		t.Errorf("complete subtree_control rewritten: %q", got)
	}
	for _, bad := range []string{"/ns/../x", "/ns//x"} {
		if err := createCgroupV2(root, bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestParseCgroupMount(t *testing.T) {
	const info = `25 1 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
36 25 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,favordynmods
`
	m, ok, err := parseCgroupMount(strings.NewReader(info), "/sys/fs/cgroup")
	if err != nil || !ok {
		t.Fatalf("not found: %v", err)
	}
	if m.FavorDynmods() {
		t.Error("favordynmods reported for a mount without it")
	}
	flags, data := remountArgs(m)
	want := uintptr(unix.MS_REMOUNT | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RELATIME)
	if flags != want {
		t.Errorf("flags %#x, want %#x (the mount's own flags kept)", flags, want)
	}
	if data != "nsdelegate,memory_recursiveprot,favordynmods" {
		t.Errorf("data %q: cgroup2's options must be kept", data)
	}
	m, ok, _ = parseCgroupMount(strings.NewReader(info), "/sys/fs/cgroup/unified")
	if !ok || !m.FavorDynmods() {
		t.Errorf("favordynmods not seen: %+v %v", m, ok)
	}
	if m.Target != "/sys/fs/cgroup/unified" {
		t.Errorf("target %q", m.Target)
	}
	if _, data := remountArgs(m); data != "favordynmods" {
		t.Errorf("favordynmods doubled: %q", data)
	}
	if _, ok, _ := parseCgroupMount(strings.NewReader(info), "/nowhere"); ok {
		t.Error("found a mount that is not there")
	}
}

func TestHasLimits(t *testing.T) {
	mem := int64(1 << 20)
	for _, tc := range []struct {
		name string
		res  *specs.LinuxResources
		want bool
	}{
		{"nil", nil, false},
		{"empty", &specs.LinuxResources{}, false},
		{"devices only", &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}}, false},
		{"memory", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &mem}}, true},
		{"pids", &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &mem}}, true},
		{"unified", &specs.LinuxResources{Unified: map[string]string{"memory.high": "1G"}}, true},
		{"empty cpu section", &specs.LinuxResources{CPU: &specs.LinuxCPU{}}, true},
	} {
		if got := hasLimits(tc.res); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A killed restore's cgroups (runc made them, then died before recording its state) are
// removed, with any task in them; while runc's state exists they are runc's to remove.
func TestReleaseKilledRestoreCgroups(t *testing.T) {
	testenv.NeedRoot(t, "making cgroups")
	cgPath := "/warm-oci-test-" + strings.ReplaceAll(t.Name(), "/", "-") + "/c1"
	paths := hostCgroupPaths(cgPath)
	t.Cleanup(func() {
		killCgroup(paths)
		for _, p := range paths {
			os.Remove(p)
			os.Remove(filepath.Dir(p))
		}
	})
	makeAll := func() {
		t.Helper()
		for k, p := range paths {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			if k == "cpuset" {
				if err := initCpuset(p); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	bundle, runcRoot := t.TempDir(), t.TempDir()
	sp, _ := json.Marshal(specs.Spec{Linux: &specs.Linux{CgroupsPath: cgPath}})
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), sp, 0o600); err != nil {
		t.Fatal(err)
	}
	exists := func() int {
		n := 0
		for _, p := range paths {
			if _, err := os.Stat(p); err == nil {
				n++
			}
		}
		return n
	}

	// runc's state recorded: left alone.
	makeAll()
	if err := os.MkdirAll(filepath.Join(runcRoot, "c1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(runcRoot, "c1", "state.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	ReleaseKilledRestore(runcRoot, "c1", bundle, "")
	if n := exists(); n != len(paths) {
		t.Fatalf("%d of %d cgroups left while runc's state exists", n, len(paths))
	}

	// No state: removed, and the task in them killed.
	os.RemoveAll(filepath.Join(runcRoot, "c1"))
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	for _, p := range paths {
		if err := os.WriteFile(filepath.Join(p, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
			t.Fatalf("move the task into %s: %v", p, err)
		}
	}
	ReleaseKilledRestore(runcRoot, "c1", bundle, "")
	if n := exists(); n != 0 {
		t.Fatalf("%d of %d cgroups left", n, len(paths))
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("the task in the cgroups was not killed")
	}
}

// runc's state on a v1 host where systemd co-mounts cpu,cpuacct (and net_cls,net_prio):
// two keys name one directory. A sibling adoption renames it for the first key; the second
// key's rename fails and falls to migration from a directory that is gone.
func TestMoveCgroupsCoMounted(t *testing.T) {
	d := t.TempDir()
	old := "/parent/sb1"
	paths := map[string]string{
		"cpu":     d + "/cpu,cpuacct" + old,
		"cpuacct": d + "/cpu,cpuacct" + old,
		"freezer": d + "/freezer" + old,
		"memory":  d + "/memory" + old,
	}
	for _, p := range paths {
		os.MkdirAll(p, 0o755)
		os.WriteFile(filepath.Join(p, "cgroup.procs"), nil, 0o644)
	}
	moved, migrated, _, err := moveCgroups(paths, old, "/parent/c1", nil)
	if err != nil {
		t.Fatalf("sibling adoption with co-mounted cpu,cpuacct: %v (moved %v)", err, moved)
	}
	if len(migrated) != 0 || moved["cpu"] != d+"/cpu,cpuacct/parent/c1" || moved["cpuacct"] != moved["cpu"] {
		t.Fatalf("moved %v, migrated %v: want every hierarchy renamed", moved, migrated)
	}
}

// TestToResources2: the cgroup v2 conversion of a request's limits, as runc makes it.
func TestToResources2(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	r, unlimited := toResources2(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(20000)}})
	if r.CPU == nil || r.CPU.Max != "20000 100000" || len(unlimited) != 0 {
		t.Fatalf("quota without period: %+v %v", r.CPU, unlimited)
	}
	r, unlimited = toResources2(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(64 << 20), Swap: i64(-1)}, Pids: &specs.LinuxPids{Limit: i64(-1)}})
	if r.Memory == nil || r.Memory.Max == nil || *r.Memory.Max != 64<<20 || r.Memory.Swap != nil || r.Pids != nil ||
		!slices.Equal(unlimited, []string{"memory.swap.max", "pids.max"}) {
		t.Fatalf("unlimited swap and pids: %+v %v", r.Memory, unlimited)
	}
	r, _ = toResources2(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(64 << 20), Swap: i64(128 << 20)}})
	if r.Memory.Swap == nil || *r.Memory.Swap != 64<<20 {
		t.Fatalf("swap: %+v", r.Memory)
	}
}
