//go:build linux

package runctask

import (
	"errors"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
)

func needV1(t *testing.T) {
	t.Helper()
	if cgroups.Mode() == cgroups.Unified {
		t.Skip("cgroup v2 host: no cgroup v1 hierarchy to compare with (containerd's cgroup v2 load is used unchanged)")
	}
}

// TestPidPathIsContainerds: for real processes on this host, every hierarchy gives the
// path (or the error) cgroup1.PidPath gives.
func TestPidPathIsContainerds(t *testing.T) {
	needV1(t)
	subs, err := cgroup1.Default()
	if err != nil {
		t.Fatal(err)
	}
	names := []cgroup1.Name{"no-such-controller", "systemd"}
	for _, s := range subs {
		names = append(names, s.Name())
	}
	compare := func(pid int) {
		t.Helper()
		ours, theirs := pidPath(pid), cgroup1.PidPath(pid)
		for _, n := range names {
			p1, err1 := ours(n)
			p2, err2 := theirs(n)
			if p1 != p2 || (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) {
				t.Errorf("pid %d, %s: got %q, %v; containerd's %q, %v", pid, n, p1, err1, p2, err2)
			}
		}
	}
	for _, pid := range []int{os.Getpid(), 1, 999999999} {
		compare(pid)
	}
	// Mount roots kept from before a hierarchy was mounted are read again.
	hierarchy.mu.Lock()
	hierarchy.dests = map[string]string{}
	hierarchy.mu.Unlock()
	compare(os.Getpid())
}

// TestLoadIsContainerds: the loaded cgroup has the subsystems containerd's load finds.
func TestLoadIsContainerds(t *testing.T) {
	needV1(t)
	names := func(cg cgroup1.Cgroup) []string {
		var out []string
		for _, s := range cg.Subsystems() {
			out = append(out, string(s.Name()))
		}
		sort.Strings(out)
		return out
	}
	for i := 0; i < 2; i++ { // the second load uses the kept hierarchy
		ours, err := cgroup1.Load(pidPath(os.Getpid()), cgroup1.WithHierarchy(v1Hierarchy))
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := cgroup1.Load(cgroup1.PidPath(os.Getpid()))
		if err != nil {
			t.Fatal(err)
		}
		if a, b := strings.Join(names(ours), ","), strings.Join(names(theirs), ","); a != b || a == "" {
			t.Errorf("subsystems %q, containerd's %q", a, b)
		}
	}
}

func TestMountDestinations(t *testing.T) {
	const mountinfo = `22 1 0:21 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
31 30 0:27 /kubepods/pod1 /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct
32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
34 30 0:30 / /elsewhere/cpu rw - cgroup cgroup rw,cpu
35 30 0:31 /short cgroup rw
`
	got, err := mountDestinations(strings.NewReader(mountinfo))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"rw": "/kubepods/pod1", "cpu": "/kubepods/pod1", "cpuacct": "/kubepods/pod1", "xattr": "/", "name=systemd": "/"}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
}

func TestExistingPath(t *testing.T) {
	dests := map[string]string{"cpu": "/kubepods/pod1", "memory": "/", "name=systemd": "/"}
	path := existingPath(map[string]string{
		"cpu":          "/kubepods/pod1/ctr", // a cgroup namespace: relative to the mount's root
		"memory":       "/ns/ctr",
		"name=systemd": "/system.slice/x",
	}, dests)
	for n, want := range map[cgroup1.Name]string{"cpu": "/ctr", "memory": "/ns/ctr", "systemd": "/system.slice/x"} {
		if got, err := path(n); err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", n, got, err, want)
		}
	}
	if _, err := path("pids"); !errors.Is(err, cgroup1.ErrControllerNotActive) {
		t.Errorf("pids: got %v, want ErrControllerNotActive", err)
	}
	// The process sits at the root of the mount: the mount's root is its path.
	if got, err := existingPath(map[string]string{"cpu": "/kubepods/pod1"}, dests)("cpu"); err != nil || got != "/kubepods/pod1" {
		t.Errorf("at the mount root: got %q, %v", got, err)
	}
	if _, err := existingPath(map[string]string{"pids": "/x"}, dests)("cpu"); !errors.Is(err, cgroup1.ErrNoCgroupMountDestination) {
		t.Errorf("unmounted hierarchy: got %v, want ErrNoCgroupMountDestination", err)
	}
}
