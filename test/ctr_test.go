package test

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warmshim/warm/test/harness"
)

// ctrEnv runs ctr commands for one case.
type ctrEnv struct {
	t       *testing.T
	ctx     context.Context
	runtime string
	id      string
}

// ctr runs ctr and fails the test on error.
func (e *ctrEnv) ctr(args ...string) string {
	e.t.Helper()
	out, err := cd.Ctr(e.ctx, nil, args...)
	if err != nil {
		e.t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// run is `ctr run` with the runtime's flags; it returns output and exit code.
func (e *ctrEnv) run(stdin []byte, flags []string, args ...string) (string, int) {
	e.t.Helper()
	full := append([]string{"run"}, flags...)
	full = append(full, cd.RuntimeFlags(e.runtime)...)
	full = append(full, BusyboxRef, e.id)
	full = append(full, args...)
	out, err := cd.Ctr(e.ctx, stdin, full...)
	code := harness.ExitCode(err)
	if code < 0 {
		e.t.Fatalf("ctr run: %v\n%s", err, out)
	}
	return out, code
}

// detached starts a container in the background and removes it at the end.
func (e *ctrEnv) detached(args ...string) {
	e.t.Helper()
	if out, code := e.run(nil, []string{"-d"}, args...); code != 0 {
		e.t.Fatalf("ctr run -d: exit %d\n%s", code, out)
	}
	e.t.Cleanup(func() { e.remove(e.id) })
}

func (e *ctrEnv) remove(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _ = cd.Ctr(ctx, nil, "task", "kill", "-a", "-s", "SIGKILL", id)
	for i := 0; i < 100; i++ {
		if out, _ := cd.Ctr(ctx, nil, "task", "rm", id); !strings.Contains(out, "running") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, _ = cd.Ctr(ctx, nil, "container", "rm", id)
}

// status is the task's STATUS column in `ctr task ls`.
func (e *ctrEnv) status() string {
	for _, line := range strings.Split(e.ctr("task", "ls"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == e.id {
			return f[2]
		}
	}
	return ""
}

var ctrCases = []struct {
	name string
	run  func(e *ctrEnv)
}{
	{"run --rm: stdout, stderr and exit code", func(e *ctrEnv) {
		out, code := e.run(nil, []string{"--rm"}, "sh", "-c", "echo out; echo err >&2; exit 5")
		if code != 5 || !strings.Contains(out, "out\n") || !strings.Contains(out, "err\n") {
			e.t.Fatalf("exit %d output %q", code, out)
		}
	}},
	{"run: stdin to EOF", func(e *ctrEnv) {
		// ctr closes the task's stdin at EOF only once the task exists: the input goes
		// through a pipe fed after ctr started.
		cmd := exec.CommandContext(e.ctx, cd.Env.Ctr, append(append([]string{"--address", cd.Address, "--namespace", cd.Namespace, "run", "--rm"}, cd.RuntimeFlags(e.runtime)...), BusyboxRef, e.id, "sh", "-c", "read line; echo got:$line")...)
		in, _ := cmd.StdinPipe()
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			e.t.Fatal(err)
		}
		waitFor(e.t, "task running", func() bool { return e.status() == "RUNNING" })
		_, _ = in.Write([]byte("hello\n"))
		in.Close()
		if err := cmd.Wait(); err != nil {
			e.t.Fatalf("ctr run -i: %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "got:hello") {
			e.t.Fatalf("output %q", out.String())
		}
	}},
	{"run -t: a terminal", func(e *ctrEnv) {
		// ctr -t needs a terminal of its own: script(1) gives it one.
		args := append(append([]string{cd.Env.Ctr, "--address", cd.Address, "--namespace", cd.Namespace, "run", "--rm", "-t"}, cd.RuntimeFlags(e.runtime)...), BusyboxRef, e.id, "sh", "-c", "tty; stty size")
		cmd := exec.CommandContext(e.ctx, "script", "-qec", "stty rows 33 cols 77; "+strings.Join(args, " "), "/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			e.t.Fatalf("%v\n%s", err, out)
		}
		if !strings.Contains(string(out), "/dev/pts/") || !strings.Contains(string(out), "33 77") {
			e.t.Fatalf("tty output %q", out)
		}
	}},
	{"task exec, ps, pause, resume, metrics, kill", func(e *ctrEnv) {
		e.detached("sleep", "1000")
		out, err := cd.Ctr(e.ctx, nil, "task", "exec", "--exec-id", "x1", e.id, "sh", "-c", "echo in-exec; exit 4")
		if harness.ExitCode(err) != 4 || !strings.Contains(out, "in-exec") {
			e.t.Fatalf("exec: %v %q", err, out)
		}
		if ps := e.ctr("task", "ps", e.id); len(strings.Split(strings.TrimSpace(ps), "\n")) < 2 {
			e.t.Fatalf("ps: %q", ps)
		}
		e.ctr("task", "pause", e.id)
		if st := e.status(); st != "PAUSED" {
			e.t.Fatalf("status %q after pause", st)
		}
		e.ctr("task", "resume", e.id)
		if st := e.status(); st != "RUNNING" {
			e.t.Fatalf("status %q after resume", st)
		}
		if m := e.ctr("task", "metrics", e.id); !strings.Contains(m, "memory") {
			e.t.Fatalf("metrics: %q", m)
		}
		e.ctr("task", "kill", "-s", "SIGKILL", e.id)
		waitFor(e.t, "stopped", func() bool { return e.status() == "STOPPED" })
	}},
	{"task kill -a", func(e *ctrEnv) {
		e.detached("sh", "-c", "sleep 1000 & sleep 1000 & wait")
		e.ctr("task", "kill", "-a", "-s", "SIGKILL", e.id)
		waitFor(e.t, "stopped", func() bool { return e.status() == "STOPPED" })
	}},
	{"container checkpoint --task, restore --live", func(e *ctrEnv) {
		e.detached("sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done")
		count := func() int {
			out, _ := cd.Ctr(e.ctx, nil, "task", "exec", "--exec-id", fmt.Sprint("c", time.Now().UnixNano()), e.id, "cat", "/tmp/count")
			n, _ := strconv.Atoi(strings.TrimSpace(out))
			return n
		}
		waitFor(e.t, "counter at 20", func() bool { return count() >= 20 })
		ref := "warmtest/checkpoint:" + e.id
		e.ctr("container", "checkpoint", "--task", "--rw", e.id, ref)
		e.t.Cleanup(func() { _, _ = cd.Ctr(context.Background(), nil, "image", "rm", "--sync", ref) })
		at := count()
		e.remove(e.id)
		e.ctr("container", "restore", "--live", "--rw", e.id, ref)
		waitFor(e.t, "restored task running", func() bool { return e.status() == "RUNNING" })
		// The counter continues from the checkpoint (the rootfs is fresh: the file is
		// rewritten by the restored loop).
		var n int
		waitFor(e.t, "restored counter", func() bool { n = count(); return n > 0 })
		if n < 20 || n < at-5 {
			e.t.Fatalf("restored counter %d; it was %d at checkpoint (a cold start counts from 1)", n, at)
		}
	}},
}

// TestLifecycleCtr runs the ctr table for runc and warm.
func TestLifecycleCtr(t *testing.T) {
	need(t)
	for _, rt := range Runtimes {
		t.Run(rtName(rt), func(t *testing.T) {
			for _, tc := range ctrCases {
				t.Run(tc.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
					t.Cleanup(cancel)
					tc.run(&ctrEnv{t: t, ctx: ctx, runtime: rt, id: shortName(t)})
				})
			}
		})
	}
}
