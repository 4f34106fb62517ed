package logfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestHookWritesAndRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shim.log")
	h, err := Open(path, 300)
	if err != nil {
		t.Fatal(err)
	}
	l := logrus.New()
	l.SetOutput(discard{})
	l.AddHook(h)
	l.WithField("container", "c1").Info("first entry")
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "first entry") || !strings.Contains(string(data), "container=c1") {
		t.Fatalf("log file holds %q", data)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("log file mode %v, want 0600", st.Mode().Perm())
	}
	for i := 0; i < 10; i++ {
		l.Info(strings.Repeat("x", 50))
	}
	old, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatalf("no rotated file: %v", err)
	}
	if !strings.Contains(string(old), "x") {
		t.Fatalf("rotated file holds %q", old)
	}
	if st, _ := os.Stat(path); st.Size() > 300 {
		t.Fatalf("log file grew to %d bytes past its bound", st.Size())
	}
	h.Close()
	l.Info("after close") // dropped, no error
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
