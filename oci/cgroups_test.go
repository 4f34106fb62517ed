package oci

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCreateCgroupV2(t *testing.T) {
	root := t.TempDir()
	write := func(p, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// The root delegates everything already; the namespace's cgroup delegates nothing.
	write(filepath.Join(root, "cgroup.controllers"), "cpu memory pids\n")
	write(filepath.Join(root, "cgroup.subtree_control"), "cpu memory pids\n")
	write(filepath.Join(root, "ns", "cgroup.controllers"), "cpu memory pids\n")
	write(filepath.Join(root, "ns", "cgroup.subtree_control"), "memory\n")
	if err := createCgroupV2(root, "/ns/ctr"); err != nil {
		t.Fatal(err)
	}
	if got := read(filepath.Join(root, "cgroup.subtree_control")); got != "cpu memory pids\n" {
		t.Errorf("root subtree_control written though complete: %q", got)
	}
	if got := read(filepath.Join(root, "ns", "cgroup.subtree_control")); got != "+cpu +pids" {
		t.Errorf("namespace subtree_control: wrote %q, want the missing controllers", got)
	}
	if st, err := os.Stat(filepath.Join(root, "ns", "ctr")); err != nil || !st.IsDir() {
		t.Errorf("leaf not created: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "ns", "ctr", "cgroup.subtree_control")); err == nil {
		t.Error("the leaf's subtree_control was written (it holds the processes)")
	}
	// A second creation of a sibling writes nothing more.
	write(filepath.Join(root, "ns", "cgroup.subtree_control"), "cpu memory pids\n")
	if err := createCgroupV2(root, "ns/other"); err != nil {
		t.Fatal(err)
	}
	if got := read(filepath.Join(root, "ns", "cgroup.subtree_control")); got != "cpu memory pids\n" {
		t.Errorf("complete subtree_control rewritten: %q", got)
	}
	for _, bad := range []string{"/ns/../x", "/ns//x"} {
		if err := createCgroupV2(root, bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
