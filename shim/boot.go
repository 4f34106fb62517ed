package shim

import (
	"context"
	"os"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"

	"github.com/warmshim/warm/config"
)

// EnvBoot, set to 1 in the environment of a start action, makes the pool shim it starts
// bring up the namespace's pools at once, before any container names a template: what
// `warmctl start` does at boot, so the first container is already a hit.
const EnvBoot = "WARM_BOOT"

// bootPools is run by a shim started with EnvBoot: it starts the namespace's pools (every
// stored template, and the checkpoint images the configuration names) from the
// configuration at $WARM_CONFIG (or the default path), and exits if that leaves it
// nothing to hold.
func (s *service) bootPools(ctx context.Context) {
	if os.Getenv(EnvBoot) != "1" {
		return
	}
	os.Unsetenv(EnvBoot) // not for runc, CRIU or the containers' hooks
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		log.G(ctx).WithError(err).Error("boot: no namespace")
		s.shutdown.Shutdown()
		return
	}
	o := taskOptions{cfgPath: config.Path("")}
	o.cfg, o.cfgVersion, err = config.LoadVersion(o.cfgPath)
	if err != nil {
		log.G(ctx).WithError(err).Error("boot: warm configuration")
		s.shutdown.Shutdown()
		return
	}
	applyConfig(o)
	if err := s.warm.start(ctx, o, ns); err != nil {
		log.G(ctx).WithError(err).Error("boot: start pools")
		s.shutdown.Shutdown()
		return
	}
	log.G(ctx).WithField("namespace", ns).Info("pool shim started at boot")
	// Checkpoint images are imported in the background, retried until they succeed,
	// and hold the shim up meanwhile (holdsPools); a shim with nothing to hold has no
	// reason to stay.
	s.warm.syncImageTemplates(ctx) // marks its imports in flight before returning
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idleLocked() {
		log.G(ctx).Info("boot: no template to keep warm; the pool shim exits")
		s.shutdown.Shutdown()
	}
}
