package oci

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// On a pure cgroup v2 host a pool hit moves the sandbox's processes into the cgroup the
// container asked for. The kernel takes cgroup_threadgroup_rwsem for writing on every
// migration, and that waits for an RCU grace period (6 to 33 ms measured on a 16-core
// VM) unless the cgroup2 hierarchy is mounted with favordynmods (then about 0.1 ms). The
// option makes forks and exits host-wide a little more expensive, so warm only remounts
// with it when its configuration says so (cgroup_favordynmods). The rwsem is global (a
// hybrid host's cgroup2 mount carries the option too), but a hybrid host's hits rename
// cgroups and did not get faster with it; warm leaves hybrid hosts alone.

// CgroupMount is the host's cgroup2 mount, as /proc/self/mountinfo shows it.
type CgroupMount struct {
	Target    string   // /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host
	Pure      bool     // a pure cgroup v2 host: hits migrate processes
	MountOpts []string // per-mount options (rw, nosuid, nodev, noexec, relatime, ...)
	SuperOpts []string // cgroup2's own (rw, nsdelegate, memory_recursiveprot, ...)
}

// FavorDynmods reports whether the hierarchy is mounted with favordynmods.
func (m CgroupMount) FavorDynmods() bool { return hasOpt(m.SuperOpts, "favordynmods") }

func hasOpt(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

// hybridV2Root is where a hybrid host (cgroup v1 controllers) mounts cgroup2.
const hybridV2Root = "/sys/fs/cgroup/unified"

// HostCgroupMount returns the host's cgroup2 mount: /sys/fs/cgroup on a pure cgroup v2
// host, /sys/fs/cgroup/unified on a hybrid one; ok is false where there is none.
func HostCgroupMount() (m CgroupMount, ok bool, err error) {
	target := hybridV2Root
	if unified() {
		target = cgroupV2Root
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return m, false, err
	}
	defer f.Close()
	m, ok, err = parseCgroupMount(f, target)
	m.Pure = ok && unified()
	return m, ok, err
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

// remountArgs are the flags and data that remount m with favordynmods added and every
// other option kept (a remount replaces both the per-mount flags and cgroup2's options).
func remountArgs(m CgroupMount) (uintptr, string) {
	flags := uintptr(unix.MS_REMOUNT)
	for _, o := range m.MountOpts {
		switch o {
		case "ro":
			flags |= unix.MS_RDONLY
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "nodev":
			flags |= unix.MS_NODEV
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "noatime":
			flags |= unix.MS_NOATIME
		case "nodiratime":
			flags |= unix.MS_NODIRATIME
		case "relatime":
			flags |= unix.MS_RELATIME
		case "strictatime":
			flags |= unix.MS_STRICTATIME
		}
	}
	var data []string
	for _, o := range m.SuperOpts {
		if o != "rw" && o != "ro" && o != "" {
			data = append(data, o)
		}
	}
	if !hasOpt(data, "favordynmods") {
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
