package shim

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/oci"
)

// fakeMounts is a cgroup2 mount whose favordynmods a test clears and Enable sets.
type fakeMounts struct {
	mu      sync.Mutex
	unified bool // a pure cgroup v2 host (else hybrid)
	found   bool // a cgroup2 mount exists
	on      bool
	enables int
	enabled chan struct{}
}

func (f *fakeMounts) Mount() (oci.CgroupMount, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := oci.CgroupMount{SuperOpts: []string{"rw", "nsdelegate"}}
	if f.on {
		m.SuperOpts = append(m.SuperOpts, "favordynmods")
	}
	return m, f.found && f.unified, nil // oci.HostCgroupMount: pure cgroup v2 hosts only
}

func (f *fakeMounts) Enable(m oci.CgroupMount) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.FavorDynmods() {
		return errors.New("enabled twice")
	}
	f.on = true
	f.enables++
	if f.enabled != nil {
		f.enabled <- struct{}{}
	}
	return nil
}

func (f *fakeMounts) clear() {
	f.mu.Lock()
	f.on = false
	f.mu.Unlock()
}

func TestCheckDynmods(t *testing.T) {
	ctx := context.Background()
	off, on := config.Default(), config.Default()
	on.CgroupFavorDynmods = true
	for _, tc := range []struct {
		name          string
		fs            *fakeMounts
		cfg           config.Config
		unified       bool
		enables       int
		favorDynmodOn bool
	}{
		{"no cgroup2 mount", &fakeMounts{}, on, false, 0, false},
		{"hybrid, off, not configured", &fakeMounts{found: true}, off, false, 0, false},
		{"hybrid, off, configured: left alone", &fakeMounts{found: true}, on, false, 0, false},
		{"v2, already on", &fakeMounts{found: true, unified: true, on: true}, on, true, 0, true},
		{"v2, off, not configured: warn only", &fakeMounts{found: true, unified: true}, off, true, 0, false},
		{"v2, off, configured: remount", &fakeMounts{found: true, unified: true}, on, true, 1, true},
	} {
		if got := checkDynmods(ctx, tc.cfg, tc.fs); got != tc.unified {
			t.Errorf("%s: unified %v, want %v", tc.name, got, tc.unified)
		}
		if tc.fs.enables != tc.enables || tc.fs.on != tc.favorDynmodOn {
			t.Errorf("%s: %d remounts (favordynmods %v), want %d (%v)", tc.name, tc.fs.enables, tc.fs.on, tc.enables, tc.favorDynmodOn)
		}
	}
}

func TestDynmodsKeeper(t *testing.T) {
	fs := &fakeMounts{found: true, unified: true, on: true, enabled: make(chan struct{}, 4)}
	k := newDynmodsKeeper(fs)
	go k.run(context.Background(), time.Hour) // only kicks wake it here
	// A kick with the option on remounts nothing.
	k.kick()
	// A restore cleared it: the kick after it puts it back.
	fs.clear()
	k.kick()
	select {
	case <-fs.enabled:
	case <-time.After(10 * time.Second):
		t.Fatal("favordynmods not re-enabled after a kick")
	}
	fs.clear()
	k.kick()
	select {
	case <-fs.enabled:
	case <-time.After(10 * time.Second):
		t.Fatal("favordynmods not re-enabled after the second kick")
	}
	k.close()
	if fs.enables != 2 {
		t.Fatalf("%d remounts, want 2", fs.enables)
	}
	// Kicks never block, even with the keeper gone.
	k.kick()
	k.kick()
}

func TestDynmodsKeeperTicks(t *testing.T) {
	fs := &fakeMounts{found: true, unified: true, enabled: make(chan struct{}, 1)}
	k := newDynmodsKeeper(fs)
	go k.run(context.Background(), 5*time.Millisecond)
	defer k.close()
	select {
	case <-fs.enabled:
	case <-time.After(10 * time.Second):
		t.Fatal("the ticker did not re-enable favordynmods")
	}
}
