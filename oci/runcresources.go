package oci

import (
	"encoding/json"
	"maps"
	"reflect"
	"strings"

	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A sandbox is restored without limits (sandboxSpec), so runc's state of it says the
// container has none. Adoption applies the request's limits to the cgroup and writes
// them into runc's state as well, as runc's own create would have recorded them: runc
// update starts from the state (a swap without a memory limit is computed against the
// recorded limit, a quota against the recorded period), and it saves what it merged.

// runcResources is the part of runc's cgroup configuration (opencontainers/cgroups
// Resources, inlined in config.cgroups of runc's state) that a request's limits set,
// with runc's JSON names. The device rules are left out: they are the template's, which
// compatibility required the request's to be.
type runcResources struct {
	Memory                       int64                `json:"memory,omitempty"`
	MemoryReservation            int64                `json:"memory_reservation,omitempty"`
	MemorySwap                   int64                `json:"memory_swap,omitempty"`
	CPUShares                    uint64               `json:"cpu_shares,omitempty"`
	CPUQuota                     int64                `json:"cpu_quota,omitempty"`
	CPUBurst                     *uint64              `json:"cpu_burst,omitempty"`
	CPUPeriod                    uint64               `json:"cpu_period,omitempty"`
	CPURtRuntime                 int64                `json:"cpu_rt_quota,omitempty"`
	CPURtPeriod                  uint64               `json:"cpu_rt_period,omitempty"`
	CpusetCpus                   string               `json:"cpuset_cpus,omitempty"`
	CpusetMems                   string               `json:"cpuset_mems,omitempty"`
	CPUIdle                      *int64               `json:"cpu_idle,omitempty"`
	PidsLimit                    *int64               `json:"pids_limit,omitempty"`
	BlkioWeight                  uint16               `json:"blkio_weight,omitempty"`
	BlkioLeafWeight              uint16               `json:"blkio_leaf_weight,omitempty"`
	BlkioWeightDevice            []runcWeightDevice   `json:"blkio_weight_device,omitempty"`
	BlkioThrottleReadBpsDevice   []runcThrottleDevice `json:"blkio_throttle_read_bps_device,omitempty"`
	BlkioThrottleWriteBpsDevice  []runcThrottleDevice `json:"blkio_throttle_write_bps_device,omitempty"`
	BlkioThrottleReadIOPSDevice  []runcThrottleDevice `json:"blkio_throttle_read_iops_device,omitempty"`
	BlkioThrottleWriteIOPSDevice []runcThrottleDevice `json:"blkio_throttle_write_iops_device,omitempty"`
	HugetlbLimit                 []runcHugepageLimit  `json:"hugetlb_limit,omitempty"`
	OomKillDisable               bool                 `json:"oom_kill_disable,omitempty"`
	MemorySwappiness             *uint64              `json:"memory_swappiness,omitempty"`
	NetPrioIfpriomap             []runcIfPrioMap      `json:"net_prio_ifpriomap,omitempty"`
	NetClsClassid                uint32               `json:"net_cls_classid_u,omitempty"`
	Rdma                         map[string]runcRdma  `json:"rdma,omitempty"`
	CPUWeight                    uint64               `json:"cpu_weight,omitempty"`
	Unified                      map[string]string    `json:"unified,omitempty"`
	MemoryCheckBeforeUpdate      bool                 `json:"memory_check_before_update,omitempty"`
}

type runcWeightDevice struct {
	Major      int64  `json:"major"`
	Minor      int64  `json:"minor"`
	Weight     uint16 `json:"weight"`
	LeafWeight uint16 `json:"leafWeight"`
}

type runcThrottleDevice struct {
	Major int64  `json:"major"`
	Minor int64  `json:"minor"`
	Rate  uint64 `json:"rate"`
}

type runcHugepageLimit struct {
	Pagesize string `json:"page_size"`
	Limit    uint64 `json:"limit"`
}

type runcIfPrioMap struct {
	Interface string `json:"interface"`
	Priority  int64  `json:"priority"`
}

type runcRdma struct {
	HcaHandles *uint32 `json:"hca_handles,omitempty"`
	HcaObjects *uint32 `json:"hca_objects,omitempty"`
}

// runcResourceKeys are the JSON names of runcResources (from its tags): what adoption
// replaces in the sandbox's recorded configuration.
var runcResourceKeys = func() []string {
	t := reflect.TypeFor[runcResources]()
	keys := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		keys = append(keys, name)
	}
	return keys
}()

// toRuncResources converts a request's limits as runc's specconv (CreateCgroupConfig,
// runc 1.4) does when it creates a container.
func toRuncResources(r *specs.LinuxResources) runcResources {
	var c runcResources
	if r == nil {
		return c
	}
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			c.Memory = *m.Limit
		}
		if m.Reservation != nil {
			c.MemoryReservation = *m.Reservation
		}
		if m.Swap != nil {
			c.MemorySwap = *m.Swap
		}
		c.MemorySwappiness = m.Swappiness
		if m.DisableOOMKiller != nil {
			c.OomKillDisable = *m.DisableOOMKiller
		}
		if m.CheckBeforeUpdate != nil {
			c.MemoryCheckBeforeUpdate = *m.CheckBeforeUpdate
		}
	}
	if cpu := r.CPU; cpu != nil {
		if cpu.Shares != nil {
			c.CPUShares = *cpu.Shares
			c.CPUWeight = cgroupsv2.ConvertCPUSharesToCgroupV2Value(*cpu.Shares) // runc's conversion
		}
		if cpu.Quota != nil {
			c.CPUQuota = *cpu.Quota
		}
		c.CPUBurst = cpu.Burst
		if cpu.Period != nil {
			c.CPUPeriod = *cpu.Period
		}
		if cpu.RealtimeRuntime != nil {
			c.CPURtRuntime = *cpu.RealtimeRuntime
		}
		if cpu.RealtimePeriod != nil {
			c.CPURtPeriod = *cpu.RealtimePeriod
		}
		c.CpusetCpus, c.CpusetMems, c.CPUIdle = cpu.Cpus, cpu.Mems, cpu.Idle
	}
	if r.Pids != nil {
		c.PidsLimit = r.Pids.Limit
	}
	if b := r.BlockIO; b != nil {
		if b.Weight != nil {
			c.BlkioWeight = *b.Weight
		}
		if b.LeafWeight != nil {
			c.BlkioLeafWeight = *b.LeafWeight
		}
		for _, wd := range b.WeightDevice {
			d := runcWeightDevice{Major: wd.Major, Minor: wd.Minor}
			if wd.Weight != nil {
				d.Weight = *wd.Weight
			}
			if wd.LeafWeight != nil {
				d.LeafWeight = *wd.LeafWeight
			}
			c.BlkioWeightDevice = append(c.BlkioWeightDevice, d)
		}
		throttle := func(ds []specs.LinuxThrottleDevice) (out []runcThrottleDevice) {
			for _, d := range ds {
				out = append(out, runcThrottleDevice{Major: d.Major, Minor: d.Minor, Rate: d.Rate})
			}
			return out
		}
		c.BlkioThrottleReadBpsDevice = throttle(b.ThrottleReadBpsDevice)
		c.BlkioThrottleWriteBpsDevice = throttle(b.ThrottleWriteBpsDevice)
		c.BlkioThrottleReadIOPSDevice = throttle(b.ThrottleReadIOPSDevice)
		c.BlkioThrottleWriteIOPSDevice = throttle(b.ThrottleWriteIOPSDevice)
	}
	for _, l := range r.HugepageLimits {
		c.HugetlbLimit = append(c.HugetlbLimit, runcHugepageLimit{Pagesize: l.Pagesize, Limit: l.Limit})
	}
	if len(r.Rdma) > 0 {
		c.Rdma = make(map[string]runcRdma, len(r.Rdma))
		for k, v := range r.Rdma {
			c.Rdma[k] = runcRdma{HcaHandles: v.HcaHandles, HcaObjects: v.HcaObjects}
		}
	}
	if n := r.Network; n != nil {
		if n.ClassID != nil {
			c.NetClsClassid = *n.ClassID
		}
		for _, p := range n.Priorities {
			c.NetPrioIfpriomap = append(c.NetPrioIfpriomap, runcIfPrioMap{Interface: p.Name, Priority: int64(p.Priority)})
		}
	}
	if len(r.Unified) > 0 {
		c.Unified = maps.Clone(r.Unified)
	}
	return c
}

// setRuncResources replaces the limits recorded in cg (runc's config.cgroups, whose
// resources runc inlines; older runc nested them under "resources") with r's.
func setRuncResources(cg map[string]json.RawMessage, r *specs.LinuxResources) error {
	data, err := json.Marshal(toRuncResources(r))
	if err != nil {
		return err
	}
	var set map[string]json.RawMessage
	if err := json.Unmarshal(data, &set); err != nil {
		return err
	}
	dst := cg
	var nested map[string]json.RawMessage
	if raw, ok := cg["resources"]; ok && len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &nested); err != nil {
			return err
		}
		dst = nested
	}
	for _, k := range runcResourceKeys {
		delete(dst, k)
	}
	maps.Copy(dst, set)
	if nested != nil {
		if cg["resources"], err = json.Marshal(nested); err != nil {
			return err
		}
	}
	return nil
}
