package shim

import (
	"fmt"
	"os"
	"strings"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/store"
)

// ksmRunFile is where the kernel says whether KSM's scanner runs (1) or not.
const ksmRunFile = "/sys/kernel/mm/ksm/run"

// ksmUnavailable says why this kernel cannot merge the pages of a process and what it
// starts ("" when it can): per-process KSM (prctl PR_SET_MEMORY_MERGE) came in Linux 6.4.
func ksmUnavailable() string {
	if _, err := unix.PrctlRetInt(unix.PR_GET_MEMORY_MERGE, 0, 0, 0, 0); err != nil {
		return fmt.Sprintf("this kernel cannot merge a process's pages (prctl PR_GET_MEMORY_MERGE: %v; it needs Linux 6.4 or later)", err)
	}
	return ""
}

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
	if why := ksmUnavailable(); why != "" {
		if first {
			entry.Error("ksm = true: restoring without merging: " + why)
		}
		return false
	}
	if first {
		if run, err := os.ReadFile(ksmRunFile); err != nil || strings.TrimSpace(string(run)) != "1" {
			entry.Warnf("ksm = true, but KSM is not running (%s is %q, %v): the sandboxes are restored mergeable, and nothing merges until it is 1", ksmRunFile, strings.TrimSpace(string(run)), err)
		}
	}
	return true
}
