package main

import (
	"testing"

	"github.com/warmshim/warm/shim"
)

// warmctl start must put the shim it starts where containerd's template containers
// will look for the pool shim.
func TestGroupingMatchesTheShim(t *testing.T) {
	if groupAnnotation != shim.GroupAnnotation || poolGroup != shim.PoolGroup || envBoot != shim.EnvBoot {
		t.Fatalf("warmctl's %q/%q/%q differ from the shim's %q/%q/%q", groupAnnotation, poolGroup, envBoot,
			shim.GroupAnnotation, shim.PoolGroup, shim.EnvBoot)
	}
}
