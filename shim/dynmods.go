package shim

import (
	"context"

	"github.com/containerd/log"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/oci"
)

// checkDynmods runs when the pool shim starts: on a pure cgroup v2 host whose hierarchy
// lacks favordynmods, every pool hit waits for an RCU grace period to migrate the
// sandbox into its cgroup. With cgroup_favordynmods the shim remounts it; otherwise it
// says so once, with the fix.
func checkDynmods(ctx context.Context, cfg config.Config) {
	m, ok, err := oci.UnifiedCgroupMount()
	if err != nil {
		log.G(ctx).WithError(err).Warn("cgroup2 mount options")
		return
	}
	if !ok || m.FavorDynmods() {
		return
	}
	if cfg.CgroupFavorDynmods {
		if err := oci.EnableFavorDynmods(m); err != nil {
			log.G(ctx).WithError(err).Warn("cgroup_favordynmods: remount failed; pool hits wait for RCU grace periods")
			return
		}
		log.G(ctx).Info("cgroup2 remounted with favordynmods (cgroup_favordynmods = true)")
		return
	}
	log.G(ctx).Warn("cgroup2 is mounted without favordynmods: each pool hit waits for an RCU grace period " +
		"(about 5-35 ms) to move the sandbox into its cgroup; set cgroup_favordynmods = true in warm.toml, " +
		"or remount it yourself (docs/pool.md, \"cgroup v2\")")
}
