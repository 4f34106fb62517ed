package shim

import (
	"context"
	"path/filepath"

	runcC "github.com/containerd/go-runc"
	"github.com/containerd/log"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/internal/criuconf"
)

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
