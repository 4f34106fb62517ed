package shim

import (
	"context"
	"path/filepath"
	"time"

	runcC "github.com/containerd/go-runc"
	"github.com/containerd/log"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/internal/criuconf"
	"github.com/warmshim/warm/oci"
)

// checkpointTimeout is d, or checkpoint_timeout's default where d is not set.
func checkpointTimeout(d time.Duration) time.Duration {
	if d <= 0 {
		return config.Default().Recovery.CheckpointTimeout.Duration
	}
	return d
}

// abortAfter kills, through abort (the service's process monitor; nil: nothing), the runc
// command sub of id that is still running after d, with every process under it (CRIU,
// and the tasks a restore was making), and then calls killed: CRIU has been seen to wait
// forever (for a breakpoint a host never fires, on a task that died during a dump).
// Stop the returned timer once the command returned.
func abortAfter(abort func(sub, id string) bool, d time.Duration, sub, id string, killed func()) *time.Timer {
	return time.AfterFunc(d, func() {
		if abort != nil && abort(sub, id) {
			killed()
		}
	})
}

// thawAfterFailedDump thaws container id (runc root root) if a failed or killed dump
// left its cgroup frozen: CRIU freezes the task itself for a dump, and one that failed on
// a dying task, was stopped or was killed can leave the freeze behind.
func thawAfterFailedDump(l *log.Entry, root, id string) {
	if was, err := oci.ThawContainer(root, id); err != nil {
		l.WithError(err).Warn("thaw after a failed checkpoint")
	} else if was {
		l.Info("a failed checkpoint left the container frozen: thawed")
	}
}

// ownDumpContext gives ctx the environment of the checkpoints warm takes for itself
// (periodic checkpoints, templates): CRIU reads cfg's network lock from a file warm
// writes under run_dir (internal/criuconf). containerd's checkpoints do not get it. A
// file that cannot be written is logged, and the dump goes on with CRIU's defaults.
func ownDumpContext(ctx context.Context, cfg config.Config) context.Context {
	env, err := criuconf.Env(filepath.Join(cfg.RunDir, "criu"), cfg.CriuNetworkLock)
	if err != nil {
		log.G(ctx).WithError(err).Warn("this checkpoint uses CRIU's default network lock")
		return ctx
	}
	return runcC.WithExtraEnv(ctx, env...)
}
