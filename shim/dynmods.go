package shim

import (
	"context"
	"time"

	"github.com/containerd/log"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/oci"
)

// checkDynmods runs when the pool shim starts: on a pure cgroup v2 host whose hierarchy
// lacks favordynmods, every pool hit waits for an RCU grace period to migrate the
// sandbox into its cgroup. With cgroup_favordynmods the shim remounts it (and the
// caller keeps it so with keepDynmods); otherwise it says so once, with the fix. It
// reports whether the host is a pure cgroup v2 one.
func checkDynmods(ctx context.Context, cfg config.Config) (unified bool) {
	m, ok, err := oci.UnifiedCgroupMount()
	if err != nil {
		log.G(ctx).WithError(err).Warn("cgroup2 mount options")
		return false
	}
	if !ok || m.FavorDynmods() {
		return ok
	}
	if cfg.CgroupFavorDynmods {
		if err := oci.EnableFavorDynmods(m); err != nil {
			log.G(ctx).WithError(err).Warn("cgroup_favordynmods: remount failed; pool hits wait for RCU grace periods")
			return true
		}
		log.G(ctx).Info("cgroup2 remounted with favordynmods (cgroup_favordynmods = true)")
		return true
	}
	log.G(ctx).Warn("cgroup2 is mounted without favordynmods: each pool hit waits for an RCU grace period " +
		"(about 5-35 ms) to move the sandbox into its cgroup; set cgroup_favordynmods = true in warm.toml, " +
		"or remount it yourself (docs/pool.md, \"cgroup v2\")")
	return true
}

// dynmodsInterval is how often the pool shim checks that favordynmods is still on.
const dynmodsInterval = 2 * time.Second

// keepDynmods re-enables favordynmods whenever it finds it gone, until stop is closed: a
// new cgroup2 mount made from the host's cgroup namespace applies its own options, which
// lack it, to the whole hierarchy (runc mounting /sys/fs/cgroup for a container that has
// no cgroup namespace of its own is one; that also drops systemd's nsdelegate and
// memory_recursiveprot). A check reads /proc/self/mountinfo.
func keepDynmods(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(dynmodsInterval)
	defer t.Stop()
	times := 0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		m, ok, err := oci.UnifiedCgroupMount()
		if err != nil || !ok || m.FavorDynmods() {
			continue
		}
		if err := oci.EnableFavorDynmods(m); err != nil {
			log.G(ctx).WithError(err).Warn("cgroup_favordynmods: remount failed")
			continue
		}
		times++
		log.G(ctx).WithField("times", times).Info("favordynmods had been cleared from cgroup2 (by a cgroup2 mount from the host's cgroup namespace); re-enabled")
	}
}
