package main

import (
	"testing"

	"github.com/warmshim/warm/shim"
)

// warmctl start must put the shim it starts where containerd's template containers
// will look for the pool shim (the group: internal/group, shared), and tell it it boots.
func TestGroupingMatchesTheShim(t *testing.T) {
	if envBoot != shim.EnvBoot {
		t.Fatalf("warmctl's %q differs from the shim's %q", envBoot, shim.EnvBoot)
	}
}
