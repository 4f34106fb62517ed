package cgroup1default

import (
	"slices"
	"testing"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
)

// TestSubsystemsAreDefaults: the kept hierarchy is cgroup1.Default's, read once.
func TestSubsystemsAreDefaults(t *testing.T) {
	if cgroups.Mode() == cgroups.Unified {
		t.Skip("cgroup v2 host: no cgroup v1 hierarchy")
	}
	want, err := cgroup1.Default()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Subsystems()
	if err != nil {
		t.Fatal(err)
	}
	names := func(subs []cgroup1.Subsystem) (out []string) {
		for _, s := range subs {
			out = append(out, string(s.Name()))
		}
		return out
	}
	if !slices.Equal(names(got), names(want)) {
		t.Fatalf("Subsystems %v, cgroup1.Default %v", names(got), names(want))
	}
	again, _ := Subsystems()
	if len(again) == 0 || &again[0] != &got[0] {
		t.Fatal("read again: not kept")
	}
}
