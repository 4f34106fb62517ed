package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNamesChecked: a template name that is not one (a path, an escaped slash) is
// refused before it reaches the store or a URL; with no pool shim, "template rm .."
// once removed the whole template store.
func TestNamesChecked(t *testing.T) {
	state := t.TempDir()
	keep := filepath.Join(state, "templates", "ns", "app")
	if err := os.MkdirAll(keep, 0o700); err != nil {
		t.Fatal(err)
	}
	c := client(filepath.Join(t.TempDir(), "ctl.sock")) // no pool shim
	c.ns, c.stateDir = "ns", state
	for _, args := range [][]string{
		{"template", "rm", ".."}, {"template", "rm", "."}, {"template", "rm", "app/g1"},
		{"pool", "drain", "a%zz"}, {"pool", "prewarm", "../x", "1"}, {"pool", "prewarm", "app", "-1"},
	} {
		err := run(c, args, false)
		if err == nil || !(strings.Contains(err.Error(), "template name") || strings.Contains(err.Error(), "number of sandboxes")) {
			t.Errorf("%v: %v", args, err)
		}
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("the store lost a template: %v", err)
	}
}
