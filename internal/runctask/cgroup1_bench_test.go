//go:build linux

package runctask

import (
	"os"
	"testing"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
)

// BenchmarkLoadCgroup1 compares the load of a process's cgroup v1 with containerd's.
func BenchmarkLoadCgroup1(b *testing.B) {
	if cgroups.Mode() == cgroups.Unified {
		b.Skip("cgroup v2 host: containerd's load is used as it is")
	}
	pid := os.Getpid()
	b.Run("containerd", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := cgroup1.Load(cgroup1.PidPath(pid)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("warm", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := cgroup1.Load(pidPath(pid), cgroup1.WithHierarchy(v1Hierarchy)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
