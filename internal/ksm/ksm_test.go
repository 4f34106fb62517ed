package ksm

import (
	"testing"

	"github.com/warmshim/warm/internal/testenv"
)

// TestSetPutsBack writes pages_to_scan and puts it back; it needs root and KSM.
func TestSetPutsBack(t *testing.T) {
	old, err := Read("pages_to_scan")
	if err != nil {
		testenv.Missing(t, "KSM ("+Dir+": "+err.Error()+"; Linux built with CONFIG_KSM)")
	}
	testenv.NeedRoot(t, "writing "+Dir)
	want := "123"
	if old == want {
		want = "124"
	}
	restore, err := Set([2]string{"pages_to_scan", want})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := Read("pages_to_scan"); v != want {
		restore()
		t.Fatalf("pages_to_scan %q after Set, want %q", v, want)
	}
	restore()
	if v, _ := Read("pages_to_scan"); v != old {
		t.Fatalf("pages_to_scan %q after restore, want %q", v, old)
	}
	// A file that does not exist fails and leaves what was set before it put back.
	if _, err := Set([2]string{"pages_to_scan", want}, [2]string{"no_such_file", "1"}); err == nil {
		t.Fatal("Set of a missing file succeeded")
	}
	if v, _ := Read("pages_to_scan"); v != old {
		t.Fatalf("pages_to_scan %q after a failed Set, want %q", v, old)
	}
}
