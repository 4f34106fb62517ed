package recovery

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestStatusRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadStatus(dir); !os.IsNotExist(err) {
		t.Fatalf("no status yet: %v", err)
	}
	until := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	st := Status{Container: "c", Updated: until.Add(-time.Minute), State: StateStopping, StoppingUntil: &until, Interval: "30s", Recoveries: 2,
		LastCheckpoint: &CheckpointAttempt{At: until, Error: "CRIU: boom"}, FailedCheckpoints: 3,
		LastCrash: &Crash{At: until, ExitStatus: 137, Result: "recovered", Checkpoint: "c1", ServingAfter: "200ms"}}
	if err := WriteStatus(dir, st); err != nil {
		t.Fatal(err)
	}
	got, err := ReadStatus(dir)
	if err != nil || !reflect.DeepEqual(got, st) {
		t.Fatalf("read back %+v %v, want %+v", got, err, st)
	}
	fi, err := os.Stat(filepath.Join(dir, StatusFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("status file mode %v %v: want 0600 (root-only)", fi.Mode(), err)
	}
	// Replaced whole; no temporary file left beside it.
	st.State, st.StoppingUntil = StateWatching, nil
	if err := WriteStatus(dir, st); err != nil {
		t.Fatal(err)
	}
	if got, _ := ReadStatus(dir); got.State != StateWatching || got.StoppingUntil != nil {
		t.Fatalf("rewritten: %+v", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left in the directory: %v", entries)
	}
	// The directory of a deleted container: an error, and nothing recreated.
	gone := filepath.Join(dir, "gone")
	if err := WriteStatus(gone, st); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("write into a removed directory: %v", err)
	}
	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Fatal("the removed directory was recreated")
	}
	// ListCheckpoints reads only committed checkpoints, newest first.
	for _, n := range []string{"c100", "c300", "c200", ".tmp-1", "cx"} {
		if err := os.Mkdir(filepath.Join(dir, n), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []int64
	for _, cp := range ListCheckpoints(dir) {
		seqs = append(seqs, cp.Seq)
	}
	if !reflect.DeepEqual(seqs, []int64{300, 200, 100}) {
		t.Fatalf("checkpoints %v", seqs)
	}
}
