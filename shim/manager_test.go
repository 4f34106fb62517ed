package shim

import (
	"strings"
	"testing"
)

func TestGroupKey(t *testing.T) {
	cases := []struct {
		name        string
		annotations map[string]string
		want        string
	}{
		{"own shim without annotations", nil, "c1"},
		{"warm group", map[string]string{GroupAnnotation: "g"}, "g"},
		{"CRI sandbox", map[string]string{"io.kubernetes.cri.sandbox-id": "pod"}, "pod"},
		{"warm group wins over sandbox", map[string]string{GroupAnnotation: "g", "io.kubernetes.cri.sandbox-id": "pod"}, "g"},
		{"empty value ignored", map[string]string{GroupAnnotation: ""}, "c1"},
		{"template containers go to the pool shim", map[string]string{AnnTemplate: "py"}, PoolGroup},
		{"template wins over sandbox", map[string]string{AnnTemplate: "py", "io.kubernetes.cri.sandbox-id": "pod"}, PoolGroup},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := groupKey("c1", tc.annotations); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

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
