package shim

import (
	"github.com/warmshim/warm/internal/procfs"
	"github.com/warmshim/warm/oci/wrap"

	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runcC "github.com/containerd/go-runc"
)

// execMonitor is a plain ProcessMonitor: start, then wait.
type execMonitor struct{}

func (execMonitor) Start(c *exec.Cmd) (chan runcC.Exit, error) {
	if err := c.Start(); err != nil {
		return nil, err
	}
	ec := make(chan runcC.Exit, 1)
	go func() {
		err := c.Wait()
		st := 0
		if ee, ok := err.(*exec.ExitError); ok {
			st = ee.ExitCode()
		}
		ec <- runcC.Exit{Pid: c.Process.Pid, Status: st, Timestamp: time.Now()}
	}()
	return ec, nil
}
func (m execMonitor) StartLocked(c *exec.Cmd) (chan runcC.Exit, error) { return m.Start(c) }
func (execMonitor) Wait(c *exec.Cmd, ec chan runcC.Exit) (int, error) {
	e := <-ec
	return e.Status, nil
}

// A runc checkpoint that hangs (CRIU under it waits forever) is killed with everything
// under it by abortCheckpoint; other commands are not tracked.
func TestAbortCheckpointKillsTheTree(t *testing.T) {
	dir := t.TempDir()
	childPid := filepath.Join(dir, "child")
	fake := filepath.Join(dir, "runc")
	// "runc" starts a "CRIU" that never ends and waits for it.
	script := "#!/bin/sh\nsleep 3600 &\necho $! > " + childPid + "\nwait\n"
	if err := os.WriteFile(fake, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	m := &monitor{inner: execMonitor{}, w: newWarm("")}
	cmd := exec.Command(fake, "--root", "/r", "checkpoint", "--leave-running", "c1")
	ec, err := m.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	var crIU int
	for i := 0; i < 500 && crIU == 0; i++ {
		data, _ := os.ReadFile(childPid)
		crIU, _ = strconv.Atoi(strings.TrimSpace(string(data)))
		time.Sleep(5 * time.Millisecond)
	}
	if crIU == 0 {
		t.Fatal("the fake runc did not start its child")
	}
	if m.abortCheckpoint("other") {
		t.Fatal("aborted a checkpoint of another container")
	}
	if !m.abortCheckpoint("c1") {
		t.Fatal("no checkpoint of c1 found")
	}
	done := make(chan int, 1)
	go func() { st, _ := m.Wait(cmd, ec); done <- st }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("runc still running after abortCheckpoint")
	}
	// The child was killed too (it is a zombie or gone, never running).
	for i := 0; i < 200; i++ {
		if err := syscall.Kill(crIU, 0); err != nil || procfs.Dead(crIU) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := syscall.Kill(crIU, 0); err == nil && !procfs.Dead(crIU) {
		t.Fatalf("CRIU's stand-in %d survived", crIU)
	}
	if m.abortCheckpoint("c1") {
		t.Fatal("a finished checkpoint is still tracked")
	}
}

// The monitor keeps a watch on the output pipes a detached runc exec is given, by pid
// file, for the service to take once Start returns: a short exec is gone from /proc by
// then, and its output may still be in its pipe.
func TestMonitorWatchesExecOutput(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "runc")
	// The "runc exec" writes into its stdout and exits, as a short exec does.
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho hello\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	m := &monitor{inner: execMonitor{}, w: newWarm("")}
	run := func(detach bool) string {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		pidFile := filepath.Join(dir, "e"+strconv.FormatBool(detach)+".pid")
		args := []string{"--root", "/r", "exec", "--pid-file", pidFile, "--process", "/p.json", "c1"}
		if detach {
			args = append(args[:3], append([]string{"--detach"}, args[3:]...)...)
		}
		cmd := exec.Command(fake, args...)
		cmd.Stdout = w
		ec, err := m.Start(cmd)
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Wait(cmd, ec); err != nil {
			t.Fatal(err)
		}
		return pidFile
	}
	pidFile := run(true)
	watch := m.takeExecOutput(pidFile)
	if watch == nil {
		t.Fatal("no watch of the exec's output")
	}
	defer watch.Close()
	if n := watch.Unread(); n != 6 {
		t.Fatalf("unread %d, want 6 (\"hello\\n\")", n)
	}
	if m.takeExecOutput(pidFile) != nil {
		t.Fatal("a watch is taken once")
	}
	// Other commands (here a runc exec that is not detached, as the health checks run)
	// are not watched.
	if m.takeExecOutput(run(false)) != nil {
		t.Fatal("a watch of an exec that is not detached")
	}
}

// A restore that asks for memory merging is left to the wrapper even where the wrapper
// is the binary the monitor takes commands from (the shim, without warm-runc beside it):
// it is the wrapper that turns KSM on. Without the flag, the real runc runs it directly.
func TestMonitorLeavesMergeRestoresToTheWrapper(t *testing.T) {
	w := newWarm("")
	w.self, w.runc = "/libexec/warm/warm-shim", "/usr/bin/runc"
	m := &monitor{inner: execMonitor{}, w: w}
	for _, merge := range []bool{false, true} {
		args := []string{w.self, "--root", "/r", "--log", "/b/log.json"}
		want := w.runc
		if merge {
			args, want = append(args, wrap.FlagMemoryMerge), w.self
		}
		cmd := &exec.Cmd{Path: w.self, Args: append(args, "restore", "--bundle", "/b", "--detach", "sb1")}
		if _, handled := m.intercept(cmd); handled {
			t.Fatalf("merge %v: the shim carried out a restore", merge)
		}
		if cmd.Path != want || cmd.Args[0] != want {
			t.Errorf("merge %v: runs %s (argv[0] %s), want %s", merge, cmd.Path, cmd.Args[0], want)
		}
	}
}
