package shim

import (
	"github.com/containerd/log"

	"github.com/warmshim/warm/internal/ksm"
	"github.com/warmshim/warm/store"
)

// ksmFor reports whether t's sandboxes are restored with KSM merging on: their pool's
// ksm, where the kernel can. The first pool that asks for it logs why it cannot, or
// that KSM's scanner is not running (the sandboxes are marked all the same, and merge
// once an operator starts it).
func (w *warm) ksmFor(t *store.Template) bool {
	w.mu.Lock()
	on := w.cfg.PoolFor(t.Name).KSM
	first := on && !w.ksmChecked
	w.ksmChecked = w.ksmChecked || on
	w.mu.Unlock()
	if !on {
		return false
	}
	entry := log.L.WithField("template", t.Name)
	if why := ksm.Unavailable(); why != "" {
		if first {
			entry.Error("ksm = true: restoring without merging: " + why)
		}
		return false
	}
	if first {
		if run, err := ksm.Read("run"); err != nil || run != "1" {
			entry.Warnf("ksm = true, but KSM is not running (%s/run is %q, %v): the sandboxes are restored mergeable, and nothing merges until it is 1", ksm.Dir, run, err)
		}
	}
	return true
}
