// Package cgroup1default keeps cgroup1.Default: the cgroup v1 hierarchies this host has
// mounted, which cgroup1.Load reads from /proc/self/mountinfo on every call unless given
// a hierarchy. They are mounted at boot, so the first successful read is kept for the
// life of the process. A pool hit loads cgroups twice (runc's container, the adopted
// sandbox's limits), and each read costs about 0.14 ms on a 2-core machine.
package cgroup1default

import (
	"sync"

	"github.com/containerd/cgroups/v3/cgroup1"
)

var kept struct {
	mu   sync.Mutex
	subs []cgroup1.Subsystem // guarded by mu; nil until cgroup1.Default first succeeded
}

// Subsystems is cgroup1.Default, kept once it succeeded (an error is not kept: the next
// call reads again). It fits cgroup1.WithHierarchy.
func Subsystems() ([]cgroup1.Subsystem, error) {
	kept.mu.Lock()
	defer kept.mu.Unlock()
	if kept.subs == nil {
		subs, err := cgroup1.Default()
		if err != nil {
			return nil, err
		}
		kept.subs = subs
	}
	return kept.subs, nil
}
