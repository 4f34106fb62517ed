package oci

import (
	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/warmshim/warm/internal/cgroup1default"
)

// A hit whose request sets limits (ctr sets cpu shares, the CRI plugin shares, quota and
// memory) has them applied to the adopted sandbox's cgroup. cgroup1.Load(path).Update(res)
// reads /proc/self/mountinfo for the hierarchy, checks every hierarchy's directory, and
// has every controller update (cpuset reads and rewrites its parent's and its own cpus
// and mems whatever the request): about 0.6 ms for cpu shares alone on this 2-core
// machine. update1 gives Update only the controllers whose part of the request is set,
// from a hierarchy read once per process. A controller left out would have written
// nothing: TestUpdate1IsCgroup1Update compares the two on real cgroups.

// updaters names the controllers whose Update writes something for res: the others'
// Update returns at once (hugetlb and net_prio have none; devices were applied at the
// restore).
func updaters(res *specs.LinuxResources) map[cgroup1.Name]bool {
	u := map[cgroup1.Name]bool{}
	if c := res.CPU; c != nil {
		u[cgroup1.Cpu] = true
		if c.Cpus != "" || c.Mems != "" {
			u[cgroup1.Cpuset] = true
		}
	}
	if res.Memory != nil {
		u[cgroup1.Memory] = true
	}
	if res.Pids != nil {
		u[cgroup1.Pids] = true
	}
	if res.BlockIO != nil {
		u[cgroup1.Blkio] = true
	}
	if res.Network != nil && res.Network.ClassID != nil {
		u[cgroup1.NetCLS] = true
	}
	if len(res.Rdma) > 0 {
		u[cgroup1.Rdma] = true
	}
	return u
}

// update1 applies res (no device rules) to the cgroup v1 path as
// cgroup1.Load(cgroup1.StaticPath(path)).Update(res) does.
func update1(path string, res *specs.LinuxResources) error {
	all, err := cgroup1default.Subsystems()
	if err != nil {
		return err
	}
	want := updaters(res)
	var subs []cgroup1.Subsystem
	for _, s := range all {
		if want[s.Name()] {
			subs = append(subs, s)
		}
	}
	if len(subs) == 0 {
		return nil
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(path), cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) { return subs, nil }))
	if err != nil {
		return err
	}
	return cg.Update(res)
}
