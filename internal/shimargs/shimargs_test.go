package shimargs

import (
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	a, ok := Parse([]string{"-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd",
		"-debug", "-id", "c1", "-bundle", "/run/b/c1", "delete"})
	want := Args{Namespace: "k8s.io", ID: "c1", Bundle: "/run/b/c1", Address: "/run/containerd/containerd.sock", Debug: true, Action: "delete"}
	if !ok || a != want {
		t.Fatalf("got %+v %v, want %+v", a, ok, want)
	}
	if a, ok := Parse([]string{"-namespace", "ns", "-id", "c1"}); !ok || a.Action != "" {
		t.Fatalf("no action: %+v %v", a, ok)
	}
	// The shim library runs no action for these.
	for _, args := range [][]string{
		{"-v"}, {"-version"}, {"-info"},
		{"-namespace", "ns", "-unknown", "start"},
		{"-namespace", "ns", "start", "extra"},
		{"-debug=maybe", "start"},
	} {
		if a, ok := Parse(slices.Clone(args)); ok {
			t.Errorf("%q parsed: %+v", args, a)
		}
	}
}
