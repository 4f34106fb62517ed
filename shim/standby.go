package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/log"

	"github.com/warmshim/warm/oci"
	"github.com/warmshim/warm/pool"
	"github.com/warmshim/warm/recovery"
	"github.com/warmshim/warm/store"
)

// standby is a sandbox restored from a recovered container's latest checkpoint, on the
// container's own root filesystem, and frozen: a crash is recovered by adopting it into
// the container (as a pool hit adopts a pooled sandbox) instead of a CRIU restore.
type standby struct {
	sandboxes *oci.Sandboxes
	sb        *oci.Sandbox
	cp        string // the checkpoint directory it was restored from
}

// refreshStandby replaces the container's standby by one restored from cp (its newest
// checkpoint). Refreshes that find one in progress are skipped; a failed one leaves no
// standby (a crash is then recovered by a restore).
func (s *service) refreshStandby(rec *recoverable, cp *recovery.Checkpoint) {
	if cp == nil || !rec.standbyMu.TryLock() {
		return
	}
	defer rec.standbyMu.Unlock()
	ctx := log.WithLogger(s.context, log.G(s.context).WithField("container", rec.id))
	select {
	case <-rec.stop:
		return // being deleted
	default:
	}
	rec.mu.Lock()
	ch := rec.recovering
	rec.mu.Unlock()
	recovering := false
	if ch != nil {
		select {
		case <-ch: // the last recovery is over
		default:
			recovering = true
		}
	}
	if recovering || s.warm.isPooled(rec.id) {
		// A pooled container runs on its sandbox's snapshot; it is recovered by a restore.
		return
	}
	if old := rec.standby; old != nil {
		rec.standby = nil
		_ = old.sandboxes.Destroy(ctx, old.sb)
	}
	sbx, err := s.standbySandboxes(rec)
	if err != nil {
		log.G(ctx).WithError(err).Warn("no recovery standby")
		return
	}
	release := rec.cps.Use(cp)
	defer release()
	rec.standbyN++
	id := fmt.Sprintf("%s-standby-%d", rec.id, rec.standbyN)
	t := &store.Template{Meta: store.Meta{Name: rec.id, Namespace: rec.ns, Spec: rec.spec}, Generation: rec.standbyN, Images: cp.Images}
	// A standby that ran a moment before its freeze is kept (oci.Sandbox.CheckFresh).
	watchdog := s.warm.watchRestore(ctx, id, rec.policy.CheckpointTimeout)
	h, _, err := sbx.Restore(ctx, t, id)
	watchdog.Stop()
	if err != nil {
		log.G(ctx).WithError(err).Warn("recovery standby could not be restored; a crash is recovered by a restore")
		if h != nil {
			if derr := sbx.Destroy(ctx, h); derr != nil {
				log.G(ctx).WithError(derr).Warn("destroy the failed standby")
			}
		}
		return
	}
	rec.standby = &standby{sandboxes: sbx, sb: h.(*oci.Sandbox), cp: cp.Dir}
	log.G(ctx).WithField("checkpoint", filepath.Base(cp.Dir)).WithField("standby", id).Info("recovery standby ready")
}

// standbySandboxes is where the container's standbys are restored: runc's root of the
// namespace (an adopted standby is an ordinary container), a bundle directory under
// run_dir, and the container's own root filesystem bound in.
func (s *service) standbySandboxes(rec *recoverable) (*oci.Sandboxes, error) {
	_, real, err := s.warm.useRuntime(rec.cfg)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(rec.cfg.RunDir, rec.ns, "standby", rec.id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if rec.spec.Linux == nil || !strings.HasPrefix(rec.spec.Linux.CgroupsPath, "/") {
		return nil, fmt.Errorf("cgroupsPath %q is not a cgroupfs path", rec.spec.Linux.CgroupsPath)
	}
	return &oci.Sandboxes{
		Runc: real, Root: runcRoot(rec.cfg, rec.ns), Dir: dir,
		CgroupParent: "/warm-pool/" + rec.ns,
		Rootfs:       oci.BindRootfs{Source: filepath.Join(rec.bundle, "rootfs")},
	}, nil
}

// takeStandby hands over the container's standby if it was restored from the newest
// valid checkpoint (cands[0]); the caller adopts or destroys it.
func (s *service) takeStandby(rec *recoverable, cands []*recovery.Checkpoint) *standby {
	rec.standbyMu.Lock()
	defer rec.standbyMu.Unlock()
	st := rec.standby
	rec.standby = nil
	if st == nil {
		return nil
	}
	if len(cands) == 0 || cands[0].Dir != st.cp {
		_ = st.sandboxes.Destroy(s.context, st.sb)
		return nil
	}
	return st
}

// dropStandby destroys the container's standby (the container is being deleted).
func (s *service) dropStandby(rec *recoverable) {
	rec.standbyMu.Lock()
	defer rec.standbyMu.Unlock()
	if st := rec.standby; st != nil {
		rec.standby = nil
		_ = st.sandboxes.Destroy(s.context, st.sb)
	}
	_ = os.Remove(filepath.Join(rec.cfg.RunDir, rec.ns, "standby", rec.id))
}

// serveStandby registers st as what the container's next runc create and start adopt
// and thaw (the shim's runc monitor carries them out), replacing a standby adopted by an
// earlier recovery, which is destroyed. It returns the wrapper to name as the runc.
func (s *service) serveStandby(ctx context.Context, rec *recoverable, st *standby) (string, error) {
	wrapper, real, err := s.warm.useRuntime(rec.cfg)
	if err != nil {
		return "", err
	}
	// The delete action of a dead shim needs the real runc too.
	if err := os.WriteFile(filepath.Join(rec.bundle, "warm-runc"), []byte(real), 0o600); err != nil {
		return "", err
	}
	entry := &served{sb: &pool.Sandbox{ID: st.sb.ID, Handle: st.sb}, bundle: rec.bundle, spec: rec.spec, sandboxes: st.sandboxes}
	s.warm.mu.Lock()
	prev := s.warm.served[rec.id]
	s.warm.served[rec.id] = entry
	s.warm.mu.Unlock()
	if prev != nil && prev.pool == nil && prev.sandboxes != nil {
		destroyStandby(ctx, prev.sandboxes, prev.sb.Handle.(*oci.Sandbox))
	}
	return wrapper, nil
}

// destroyStandby destroys an adopted standby's remains (its bundle and the bind of the
// container's rootfs) and the container's standby directory once it is empty.
func destroyStandby(ctx context.Context, sbx *oci.Sandboxes, sb *oci.Sandbox) {
	_ = sbx.Destroy(ctx, sb)
	_ = os.Remove(sbx.Dir)
}
