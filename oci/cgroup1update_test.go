package oci

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/warmshim/warm/internal/testenv"
)

// v1Pair makes two new cgroups in every v1 hierarchy (their cpusets filled in, as runc
// does) and returns their paths; they are removed at the end of the test.
func v1Pair(tb testing.TB, name string) (a, b string) {
	tb.Helper()
	testenv.NeedRoot(tb, "making cgroups")
	if unified() {
		tb.Skip("cgroup v1 only (a pure cgroup v2 host applies limits through cgroup2)")
	}
	parent := "/warm-oci-test-" + name
	a, b = parent+"/a", parent+"/b"
	for _, p := range []string{a, b} {
		for k, dir := range hostCgroupPaths(p) {
			if k == "" {
				continue
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				tb.Fatal(err)
			}
			if k == "cpuset" {
				if err := initCpuset(filepath.Dir(dir)); err != nil {
					tb.Fatal(err)
				}
				if err := initCpuset(dir); err != nil {
					tb.Fatal(err)
				}
			}
		}
	}
	tb.Cleanup(func() {
		for _, p := range []string{a, b, parent} {
			for k, dir := range hostCgroupPaths(p) {
				if k != "" {
					os.Remove(dir)
				}
			}
		}
	})
	return a, b
}

// readAll reads every readable file of a cgroup in every v1 hierarchy, by
// hierarchy/file ("cgroup.procs" and the like included: both cgroups are empty).
func readAll(t *testing.T, path string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, dir := range hostCgroupPaths(path) {
		if k == "" {
			continue
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			// Accounting, not configuration: cpu.stat counts a quota's period timer,
			// which fires or not in the moment between the two reads.
			if e.IsDir() || strings.HasSuffix(e.Name(), ".stat") || strings.Contains(e.Name(), ".stat.") {
				continue
			}
			v, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				continue // write-only (cgroup.event_control, memory.force_empty, ...)
			}
			out[k+"/"+e.Name()] = string(v)
		}
	}
	return out
}

// TestUpdate1IsCgroup1Update applies each request to one new cgroup with update1 and to
// another with cgroup1.Load(...).Update, and compares every file of the two.
func TestUpdate1IsCgroup1Update(t *testing.T) {
	u64 := func(v uint64) *uint64 { return &v }
	i64 := func(v int64) *int64 { return &v }
	u32 := func(v uint32) *uint32 { return &v }
	u16 := func(v uint16) *uint16 { return &v }
	for _, tc := range []struct {
		name      string
		hierarchy string // one the request must change where the host has it
		res       specs.LinuxResources
	}{
		{"shares", "cpu", specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(2048)}}},
		{"cri", "memory", specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(512), Quota: i64(50000), Period: u64(100000)},
			Memory: &specs.LinuxMemory{Limit: i64(256 << 20), Swap: i64(256 << 20)}, Pids: &specs.LinuxPids{Limit: i64(100)}}},
		{"cpuset", "cpuset", specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "0", Mems: "0"}}},
		{"memory", "memory", specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(96 << 20), Reservation: i64(64 << 20), Swappiness: u64(10)}}},
		{"pids", "pids", specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(50)}}},
		{"blkio", "blkio", specs.LinuxResources{BlockIO: &specs.LinuxBlockIO{Weight: u16(300)}}},
		{"net_cls", "net_cls", specs.LinuxResources{Network: &specs.LinuxNetwork{ClassID: u32(0x100001)}}},
		{"only unified keys", "", specs.LinuxResources{Unified: map[string]string{"memory.high": "1000000"}}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			a, b := v1Pair(t, strings.ReplaceAll(tc.name, " ", "-"))
			before := readAll(t, a)
			res := tc.res
			err1 := update1(a, &res)
			res = tc.res
			cg, err := cgroup1.Load(cgroup1.StaticPath(b))
			if err != nil {
				t.Fatal(err)
			}
			err2 := cg.Update(&res)
			// Both fail alike where the kernel lacks a file (blkio.weight without CFQ).
			if (err1 == nil) != (err2 == nil) || (err1 != nil && strings.ReplaceAll(err1.Error(), a, b) != err2.Error()) {
				t.Fatalf("update1: %v; cgroup1 Update: %v", err1, err2)
			}
			got, want := readAll(t, a), readAll(t, b)
			changed := 0
			for k, w := range want {
				if got[k] != w {
					t.Errorf("%s: update1 left %q, cgroup1 Update wrote %q", k, got[k], w)
				}
				if before[k] != got[k] {
					changed++
				}
			}
			if len(got) != len(want) {
				t.Errorf("%d files read against %d", len(got), len(want))
			}
			if changed == 0 && err1 == nil && tc.hierarchy != "" {
				if _, err := os.Stat(filepath.Join(cgroupV2Root, tc.hierarchy)); err == nil {
					t.Errorf("the request changed no file: the comparison shows nothing")
				}
			}
		})
	}
}

func BenchmarkApplyResourcesShares(b *testing.B) {
	a, _ := v1Pair(b, "bench")
	shares := uint64(1024)
	res := &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: &shares}}
	b.Run("update1", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := applyResources(a, res); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cgroup1", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			cg, err := cgroup1.Load(cgroup1.StaticPath(a))
			if err != nil {
				b.Fatal(err)
			}
			if err := cg.Update(res); err != nil {
				b.Fatal(err)
			}
		}
	})
}
