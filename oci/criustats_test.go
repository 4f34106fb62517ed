package oci

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A stats-dump written by CRIU 4.1.1 (runc checkpoint --leave-running of a busybox loop).
const statsDumpHex = "4059105506330957240000000a2208e5a20610e0bb0918d20820ad03282f300038214000480050085808600068007000"

func TestReadDumpStats(t *testing.T) {
	dir := t.TempDir()
	b, _ := hex.DecodeString(statsDumpHex)
	if err := os.WriteFile(filepath.Join(dir, "stats-dump"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := ReadDumpStats(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := DumpStats{Freezing: 102757 * time.Microsecond, Frozen: 155104 * time.Microsecond,
		MemDump: 1106 * time.Microsecond, MemWrite: 429 * time.Microsecond, Pages: 33}
	if st != want {
		t.Fatalf("got %+v, want %+v", st, want)
	}
	if st.Pause() != want.Freezing+want.Frozen {
		t.Fatalf("pause %v", st.Pause())
	}
	// Not a stats image, or cut short: an error, not zeros.
	for _, bad := range [][]byte{b[:10], append([]byte{0, 0, 0, 0}, b[4:]...), b[:20]} {
		if err := os.WriteFile(filepath.Join(dir, "stats-dump"), bad, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadDumpStats(dir); err == nil {
			t.Fatalf("no error for %x", bad)
		}
	}
}

func TestRuncErrors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log.json")
	log := `{"level":"info","msg":"x","time":"t"}
{"level":"error","msg":"open /var/lib/nerdctl/x/hosts: no such file or directory","time":"t"}
not json
{"level":"warning","msg":"w"}
`
	if err := os.WriteFile(p, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := RuncErrors(p); got != "open /var/lib/nerdctl/x/hosts: no such file or directory" {
		t.Fatalf("got %q", got)
	}
	if got := RuncErrors(filepath.Join(t.TempDir(), "none")); got != "" {
		t.Fatalf("missing file: %q", got)
	}
}
