package oci

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// On a pure cgroup v2 host a pool hit moves the sandbox's processes into the cgroup the
// container asked for. The kernel takes cgroup_threadgroup_rwsem for writing on every
// migration, and that waits for an RCU grace period (6 to 33 ms measured on a 16-core
// VM) unless the cgroup2 hierarchy is mounted with favordynmods (then about 0.1 ms). The
// option makes forks and exits host-wide a little more expensive, so warm only remounts
// with it when its configuration says so (cgroup_favordynmods). The rwsem is global (a
// hybrid host's cgroup2 mount can carry the option too), but a hybrid host's hits rename
// cgroups and did not get faster with it; warm leaves hybrid hosts alone.

// CgroupMount is the host's cgroup2 mount, as /proc/self/mountinfo shows it.
type CgroupMount struct {
	Target    string   // where it is mounted
	MountOpts []string // per-mount options (rw, nosuid, nodev, noexec, relatime, ...)
	SuperOpts []string // cgroup2's own (rw, nsdelegate, memory_recursiveprot, ...)
}

// FavorDynmods reports whether the hierarchy is mounted with favordynmods.
func (m CgroupMount) FavorDynmods() bool { return slices.Contains(m.SuperOpts, "favordynmods") }

// HostCgroupMount returns the cgroup2 mount at /sys/fs/cgroup of a pure cgroup v2 host;
// ok is false on a cgroup v1 or hybrid host (its hits rename cgroups; warm leaves its
// cgroup2 mount alone).
func HostCgroupMount() (m CgroupMount, ok bool, err error) {
	if !unified() {
		return m, false, nil
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return m, false, err
	}
	defer f.Close()
	return parseCgroupMount(f, cgroupV2Root)
}

// parseCgroupMount finds the cgroup2 mount at target in a mountinfo file (the last one:
// a later mount hides an earlier).
func parseCgroupMount(r io.Reader, target string) (m CgroupMount, ok bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT TARGET MOUNTOPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		pre, post, found := strings.Cut(sc.Text(), " - ")
		if !found {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 6 || len(g) < 3 || f[4] != target || g[0] != "cgroup2" {
			continue
		}
		m, ok = CgroupMount{Target: target, MountOpts: strings.Split(f[5], ","), SuperOpts: strings.Split(g[2], ",")}, true
	}
	return m, ok, sc.Err()
}

// mountFlags are the per-mount options a remount must pass again as flags.
var mountFlags = map[string]uintptr{
	"ro": unix.MS_RDONLY, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV, "noexec": unix.MS_NOEXEC,
	"noatime": unix.MS_NOATIME, "nodiratime": unix.MS_NODIRATIME, "relatime": unix.MS_RELATIME,
	"strictatime": unix.MS_STRICTATIME,
}

// remountArgs are the flags and data that remount m with favordynmods added and every
// other option kept (a remount replaces both the per-mount flags and cgroup2's options).
func remountArgs(m CgroupMount) (uintptr, string) {
	flags := uintptr(unix.MS_REMOUNT)
	for _, o := range m.MountOpts {
		flags |= mountFlags[o]
	}
	var data []string
	for _, o := range m.SuperOpts {
		if o != "rw" && o != "ro" && o != "" {
			data = append(data, o)
		}
	}
	if !slices.Contains(data, "favordynmods") {
		data = append(data, "favordynmods")
	}
	return flags, strings.Join(data, ",")
}

// EnableFavorDynmods remounts the cgroup2 hierarchy m with favordynmods, keeping its
// other options, and checks that the kernel took it.
func EnableFavorDynmods(m CgroupMount) error {
	flags, data := remountArgs(m)
	if err := unix.Mount("none", m.Target, "", flags, data); err != nil {
		return fmt.Errorf("remount %s with %q: %w", m.Target, data, err)
	}
	now, ok, err := HostCgroupMount()
	if err != nil || !ok || !now.FavorDynmods() {
		return fmt.Errorf("remount %s with %q: favordynmods not in the mount's options afterwards (%v)", m.Target, data, err)
	}
	return nil
}
