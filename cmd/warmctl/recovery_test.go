package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warmshim/warm/recovery"
)

// TestRecoveryLs: warmctl recovery ls reads the containers' checkpoints and statuses
// from the state directory and tells each one's state, checkpoints and last crash.
func TestRecoveryLs(t *testing.T) {
	state := t.TempDir()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	ns := filepath.Join(state, "checkpoints", "default")
	mk := func(id string, st *recovery.Status, cps ...time.Time) {
		dir := filepath.Join(ns, id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, at := range cps {
			images := filepath.Join(dir, "c"+strconv.FormatInt(at.UnixNano(), 10), "images")
			if err := os.MkdirAll(images, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(images, "pages-1.img"), make([]byte, 3<<20), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if st != nil {
			if err := recovery.WriteStatus(dir, *st); err != nil {
				t.Fatal(err)
			}
		}
	}
	until := now.Add(30 * time.Second)
	past := now.Add(-time.Second)
	mk("api", &recovery.Status{Container: "api", State: recovery.StateWatching, Recoveries: 1,
		LastCheckpoint: &recovery.CheckpointAttempt{At: now, Pause: "40ms"},
		LastCrash:      &recovery.Crash{At: now.Add(-90 * time.Second), ExitStatus: 137, Result: "recovered", Checkpoint: "c5", ServingAfter: "216ms"}},
		now.Add(-2*time.Second), now.Add(-5*time.Second))
	mk("worker", &recovery.Status{Container: "worker", State: recovery.StateStopping, StoppingUntil: &until, FailedCheckpoints: 2,
		LastCheckpoint: &recovery.CheckpointAttempt{At: now, Error: "CRIU: no space left"}})
	mk("reloaded", &recovery.Status{Container: "reloaded", State: recovery.StateStopping, StoppingUntil: &past})
	mk("old-shim", nil, now.Add(-time.Minute))

	es, err := recoveries(state, "default")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := printRecoveries(&b, es, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log("\n" + out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := [][]string{
		{"CONTAINER", "STATE", "CHECKPOINTS", "NEWEST", "SIZE", "PAUSE", "RECOVERIES", "LAST CRASH"},
		{"api", "watching", "2", "2s ago", "3.0MiB", "40ms", "1", "exit 137 1m30s ago: recovered from c5, serving after 216ms"},
		{"old-shim", "-", "1", "1m0s ago", "3.0MiB", "-", "-", "-"},
		{"reloaded", "watching", "0", "none"},
		{"worker", "stopping (kill_grace: 30s left)", "0", "none", "-", "-", "0", "-"},
		{"worker: the last 2 periodic checkpoint(s) failed (no checkpoint to recover from)", "CRIU: no space left"},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, parts := range want {
		for _, p := range parts {
			if !strings.Contains(lines[i], p) {
				t.Errorf("line %d %q lacks %q", i, lines[i], p)
			}
		}
	}
	// Nothing in the namespace: an empty table, no error.
	if es, err := recoveries(state, "other"); err != nil || len(es) != 0 {
		t.Fatalf("empty namespace: %v %v", es, err)
	}
	b.Reset()
	if err := printRecoveriesJSON(&b, nil); err != nil || strings.TrimSpace(b.String()) != "[]" {
		t.Fatalf("empty JSON %q %v", b.String(), err)
	}
}
