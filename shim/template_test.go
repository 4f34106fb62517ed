package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// teeSees writes chunks into a stdout tee looking for text and reports whether it
// signalled readiness.
func teeSees(t *testing.T, text string, chunks ...[]byte) bool {
	t.Helper()
	path := filepath.Join(t.TempDir(), "warm-stdout")
	ready := make(chan struct{})
	tee, err := startTee(path, "", []byte(text), ready)
	if err != nil {
		t.Fatal(err)
	}
	defer tee.Close()
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, c := range chunks {
		if _, err := w.Write(c); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // separate reads
	}
	select {
	case <-ready:
		return true
	case <-time.After(500 * time.Millisecond):
		return false
	}
}

func TestTeeReadiness(t *testing.T) {
	if !teeSees(t, "server ready", []byte("... server re"), []byte("ady on :80\n")) {
		t.Error("text split across reads not seen")
	}
	if !teeSees(t, "ready>", []byte("ready> ")) {
		t.Error("a prompt without a line end not seen")
	}
	if teeSees(t, "ready", []byte("not yet\n"), []byte("still not\n")) {
		t.Error("ready without the text")
	}
	// A line longer than the tee keeps, then the text: no panic, and it is seen.
	long := strings.Repeat("y", 70000)
	if !teeSees(t, strings.Repeat("x", maxReadyText), []byte(long), []byte(long), []byte(strings.Repeat("x", maxReadyText)+"\n")) {
		t.Error("text after a long line not seen")
	}
}

func TestParseReadyStdoutText(t *testing.T) {
	for _, bad := range []string{"stdout:a\nb", "stdout:a\rb", "stdout:" + strings.Repeat("x", maxReadyText+1)} {
		if _, err := parseReady(bad); err == nil || !strings.Contains(err.Error(), AnnReady) {
			t.Errorf("%.40q: %v", bad, err)
		}
	}
	if _, err := parseReady("stdout:" + strings.Repeat("x", maxReadyText)); err != nil {
		t.Error(err)
	}
}

// TestFileRuleResolvesInRoot: file:/var/run/app.ready in an image where /var/run is a
// link to /run is the container's /run/app.ready, not the host's.
func TestFileRuleResolvesInRoot(t *testing.T) {
	root := t.TempDir() // stands for /proc/PID/root
	for _, d := range []string{"run", "var"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/run", filepath.Join(root, "var", "run")); err != nil {
		t.Fatal(err)
	}
	if existsUnder(root, "/var/run/app.ready") {
		t.Fatal("ready before the file exists")
	}
	if err := os.WriteFile(filepath.Join(root, "run", "app.ready"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if !existsUnder(root, "/var/run/app.ready") {
		t.Fatal("the file, reached through the container's own link, not seen")
	}
	// ".." cannot climb out of the root.
	if err := os.WriteFile(filepath.Join(filepath.Dir(root), "outside.ready"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(filepath.Join(filepath.Dir(root), "outside.ready"))
	if existsUnder(root, "/../outside.ready") {
		t.Fatal("a path climbed out of the root")
	}
}
