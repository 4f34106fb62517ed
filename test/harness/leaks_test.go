package harness

import (
	"os/exec"
	"slices"
	"testing"
)

func TestProcessesUnder(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sleep", "30")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if pids := processesUnder(dir); !slices.Contains(pids, cmd.Process.Pid) {
		t.Fatalf("processes under %s: %v, want %d among them", dir, pids, cmd.Process.Pid)
	}
	if pids := processesUnder(dir + "-other"); len(pids) != 0 {
		t.Fatalf("processes under another dir: %v", pids)
	}
}
