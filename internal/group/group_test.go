package group

import (
	"maps"
	"strings"
	"testing"
)

const ready = "io.containerd.warm.ready"

func TestKey(t *testing.T) {
	cases := []struct {
		name        string
		annotations map[string]string
		want        string
	}{
		{"own shim without annotations", nil, "c1"},
		{"warm group", map[string]string{Annotation: "g"}, "g"},
		{"CRI sandbox", map[string]string{"io.kubernetes.cri.sandbox-id": "pod"}, "pod"},
		{"warm group wins over sandbox", map[string]string{Annotation: "g", "io.kubernetes.cri.sandbox-id": "pod"}, "g"},
		{"empty value ignored", map[string]string{Annotation: ""}, "c1"},
		{"template containers go to the pool shim", map[string]string{TemplateAnnotation: "py"}, Pool},
		{"template wins over sandbox", map[string]string{TemplateAnnotation: "py", "io.kubernetes.cri.sandbox-id": "pod"}, Pool},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Key("c1", tc.annotations); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestScope(t *testing.T) {
	pod := map[string]string{
		TemplateAnnotation:            "all",
		TemplateAnnotation + "/app":   "app-tmpl",
		ready + "/app":                "file:/ready",
		"io.containerd.warm.recovery": "on",
		Annotation:                    "g",
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
		{"not CRI: unchanged", map[string]string{TemplateAnnotation: "t", TemplateAnnotation + "/app": "u"}, map[string]string{TemplateAnnotation: "t", TemplateAnnotation + "/app": "u"}},
		{"sandbox: no warm keys but the group", with(criContainerType, "sandbox", criContainerName, "POD"),
			map[string]string{Annotation: "g", "other": "x", criContainerType: "sandbox", criContainerName: "POD"}},
		{"named container: its own keys win", with(criContainerType, "container", criContainerName, "app"),
			map[string]string{TemplateAnnotation: "app-tmpl", ready: "file:/ready", "io.containerd.warm.recovery": "on", Annotation: "g", "other": "x",
				criContainerType: "container", criContainerName: "app"}},
		{"other container: plain keys only", with(criContainerType, "container", criContainerName, "sidecar"),
			map[string]string{TemplateAnnotation: "all", "io.containerd.warm.recovery": "on", Annotation: "g", "other": "x",
				criContainerType: "container", criContainerName: "sidecar"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := maps.Clone(tc.in)
			got := Scope(tc.in)
			if !maps.Equal(got, tc.want) {
				t.Fatalf("got %v\nwant %v", got, tc.want)
			}
			if !maps.Equal(tc.in, before) {
				t.Fatal("input modified")
			}
		})
	}
}

// TestCheck: a group value that is not an identifier (a path leading to another
// namespace's shim) is refused, naming the annotation.
func TestCheck(t *testing.T) {
	for _, v := range []string{"../victim/warm-pool", "a/b", ".", "..", "-x", string(make([]byte, 77))} {
		if err := Check(map[string]string{Annotation: v}); err == nil || !strings.Contains(err.Error(), Annotation) {
			t.Errorf("%q: %v", v, err)
		}
	}
	for _, v := range []string{"", "g1", "team.a_b-c", "pod-1"} {
		if err := Check(map[string]string{Annotation: v}); err != nil {
			t.Errorf("%q: %v", v, err)
		}
	}
	if err := Check(map[string]string{"other": "../x"}); err != nil {
		t.Error(err)
	}
}
