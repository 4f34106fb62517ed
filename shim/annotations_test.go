package shim

import (
	"maps"
	"testing"
)

func TestScopeAnnotations(t *testing.T) {
	pod := map[string]string{
		AnnTemplate:                   "all",
		AnnTemplate + "/app":          "app-tmpl",
		AnnReady + "/app":             "file:/ready",
		"io.containerd.warm.recovery": "on",
		GroupAnnotation:               "g",
		"other":                       "x",
	}
	with := func(kv ...string) map[string]string {
		m := maps.Clone(pod)
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name string
		in   map[string]string
		want map[string]string
	}{
		{"not CRI: unchanged", map[string]string{AnnTemplate: "t", AnnTemplate + "/app": "u"}, map[string]string{AnnTemplate: "t", AnnTemplate + "/app": "u"}},
		{"sandbox: no warm keys but the group", with(criContainerType, "sandbox", criContainerName, "POD"),
			map[string]string{GroupAnnotation: "g", "other": "x", criContainerType: "sandbox", criContainerName: "POD"}},
		{"named container: its own keys win", with(criContainerType, "container", criContainerName, "app"),
			map[string]string{AnnTemplate: "app-tmpl", AnnReady: "file:/ready", "io.containerd.warm.recovery": "on", GroupAnnotation: "g", "other": "x",
				criContainerType: "container", criContainerName: "app"}},
		{"other container: plain keys only", with(criContainerType, "container", criContainerName, "sidecar"),
			map[string]string{AnnTemplate: "all", "io.containerd.warm.recovery": "on", GroupAnnotation: "g", "other": "x",
				criContainerType: "container", criContainerName: "sidecar"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := maps.Clone(tc.in)
			got := scopeAnnotations(tc.in)
			if !maps.Equal(got, tc.want) {
				t.Fatalf("got %v\nwant %v", got, tc.want)
			}
			if !maps.Equal(tc.in, before) {
				t.Fatal("input modified")
			}
		})
	}
}
