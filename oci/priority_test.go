package oci

import (
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/internal/procfs"
)

func TestLowPriorityChildren(t *testing.T) {
	var out []byte
	err := lowPriority(func() error {
		var err error
		out, err = exec.Command("sh", "-c", "cat /proc/self/stat").Output()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := procfs.ParseStat(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Nice != backgroundNice {
		t.Fatalf("child of lowPriority runs at nice %d, want %d", st.Nice, backgroundNice)
	}
	// The calling thread is back at its nice value (or retired, without root).
	raw, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if unix.Geteuid() == 0 && 20-raw != 0 {
		t.Fatalf("this thread stayed at nice %d", 20-raw)
	}
}
