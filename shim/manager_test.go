package shim

import (
	"strings"
	"testing"
)

func TestCgroupMode(t *testing.T) {
	for _, m := range []string{"", "soft", "full", "strict", "ignore"} {
		if _, err := cgroupMode(m); err != nil {
			t.Errorf("%q: %v", m, err)
		}
	}
	_, err := cgroupMode("hard")
	if err == nil || !strings.Contains(err.Error(), "cgroups_mode") || !strings.Contains(err.Error(), "soft, full, strict or ignore") {
		t.Fatalf("got %v", err)
	}
}
