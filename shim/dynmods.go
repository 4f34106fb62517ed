package shim

import (
	"context"
	"time"

	"github.com/containerd/log"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/oci"
)

// On a pure cgroup v2 host a pool hit migrates the sandbox's processes into the cgroup
// the container asked for, and the kernel makes every migration wait for an RCU grace
// period (6 to 33 ms measured on a 16-core VM) unless the hierarchy is mounted with
// favordynmods (then about 0.1 ms). A new cgroup2 mount made from the host's cgroup
// namespace applies its own options, without it, to the whole hierarchy: CRIU restoring
// a container's /sys/fs/cgroup does that (every refill), and so does runc mounting it for
// a container without a cgroup namespace of its own (that also drops systemd's nsdelegate
// and memory_recursiveprot).

// cgroupMounts reads and remounts the cgroup2 hierarchy (oci's functions; a fake in
// tests).
type cgroupMounts interface {
	Mount() (m oci.CgroupMount, pureV2 bool, err error)
	Enable(oci.CgroupMount) error
}

type hostCgroupMounts struct{}

func (hostCgroupMounts) Mount() (oci.CgroupMount, bool, error) { return oci.HostCgroupMount() }
func (hostCgroupMounts) Enable(m oci.CgroupMount) error        { return oci.EnableFavorDynmods(m) }

// checkDynmods runs when the pool shim starts, and acts on a pure cgroup v2 host only: with
// cgroup_favordynmods it remounts the hierarchy with favordynmods (and the caller keeps it
// so with a dynmodsKeeper); otherwise it warns once, with the fix. On a hybrid host a hit
// renames cgroups instead of migrating processes, and the option did not help there: with
// it `go run ./test/cmd/bench -apps python` measured a shim-side p99 of 38.6 ms against
// 19.9 without (the renames still wait for cgroup_mutex). It reports whether the host is
// pure cgroup v2.
func checkDynmods(ctx context.Context, cfg config.Config, fs cgroupMounts) (pure bool) {
	if !cfg.CgroupFavorDynmods {
		m, ok, err := fs.Mount()
		if err != nil {
			log.G(ctx).WithError(err).Warn("cgroup2 mount options")
			return false
		}
		if ok && !m.FavorDynmods() {
			log.G(ctx).Warn("cgroup2 is mounted without favordynmods: each pool hit waits for an RCU grace period " +
				"(6 to 33 ms measured) to move the sandbox into its cgroup; set cgroup_favordynmods = true in warm.toml " +
				"(docs/pool.md, \"cgroup v2\")")
		}
		return ok
	}
	pure, enabled, err := ensureDynmods(fs)
	switch {
	case err != nil && !pure:
		log.G(ctx).WithError(err).Warn("cgroup2 mount options")
	case err != nil:
		log.G(ctx).WithError(err).Warn("cgroup_favordynmods: remount failed; pool hits wait for RCU grace periods")
	case enabled:
		log.G(ctx).Info("cgroup2 remounted with favordynmods (cgroup_favordynmods = true)")
	}
	return pure
}

// ensureDynmods remounts a pure cgroup v2 host's hierarchy with favordynmods where it is
// missing: pure is whether the host is one, enabled whether it remounted.
func ensureDynmods(fs cgroupMounts) (pure, enabled bool, err error) {
	m, ok, err := fs.Mount()
	if err != nil || !ok || m.FavorDynmods() {
		return ok, false, err
	}
	if err := fs.Enable(m); err != nil {
		return true, false, err
	}
	return true, true, nil
}

// dynmodsInterval is how often the keeper checks favordynmods without being kicked.
const dynmodsInterval = 2 * time.Second

// dynmodsKeeper re-enables favordynmods whenever it finds it gone: after each refill's
// restore (kick) and every dynmodsInterval. A check reads /proc/self/mountinfo.
type dynmodsKeeper struct {
	fs    cgroupMounts
	kicks chan struct{}
	stop  chan struct{}
	done  chan struct{}
	times int // re-enables so far; owned by run
}

func newDynmodsKeeper(fs cgroupMounts) *dynmodsKeeper {
	return &dynmodsKeeper{fs: fs, kicks: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// kick asks for a check now (a restore just mounted cgroup2); it never blocks.
func (k *dynmodsKeeper) kick() {
	select {
	case k.kicks <- struct{}{}:
	default:
	}
}

// close stops the keeper and waits for it.
func (k *dynmodsKeeper) close() {
	close(k.stop)
	<-k.done
}

func (k *dynmodsKeeper) run(ctx context.Context, interval time.Duration) {
	defer close(k.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-t.C:
		case <-k.kicks:
		}
		pure, enabled, err := ensureDynmods(k.fs)
		if err != nil && pure {
			log.G(ctx).WithError(err).Warn("cgroup_favordynmods: remount failed")
		}
		if !enabled {
			continue
		}
		k.times++
		l := log.G(ctx).WithField("times", k.times)
		if k.times == 1 {
			l.Info("favordynmods had been cleared from cgroup2 (by a cgroup2 mount from the host's cgroup namespace); re-enabled (later times are logged at debug)")
			continue
		}
		l.Debug("favordynmods had been cleared from cgroup2 (by a cgroup2 mount from the host's cgroup namespace); re-enabled")
	}
}
