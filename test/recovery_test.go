package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/warmshim/warm/internal/procfs"
	"github.com/warmshim/warm/recovery"
	"github.com/warmshim/warm/store"
	"github.com/warmshim/warm/test/harness"
)

// counterApp prints an increasing counter: a restored task continues from its
// checkpoint's value, a cold start would print 1 again.
var counterApp = []string{"sh", "-c", "i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done"}

func recoveryAnn(extra map[string]string) oci.SpecOpts {
	a := map[string]string{"io.containerd.warm.recovery": "on", "io.containerd.warm.checkpoint-interval": "300ms"}
	for k, v := range extra {
		a[k] = v
	}
	return oci.WithAnnotations(a)
}

// recoveryConfig writes a warm.toml with the suite's settings and a fast [recovery].
func recoveryConfig(t *testing.T, extra string) string {
	base, err := os.ReadFile(cd.WarmCfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(tempDir(t), "warm.toml")
	cfg := string(base) + "\n[recovery]\nmax_retries = 2\nbackoff = \"50ms\"\nhealth_timeout = \"500ms\"\n" + extra
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkpointDir is where warm keeps container id's checkpoints and recovery status.
func checkpointDir(id string) string {
	return filepath.Join(cd.WarmState, "checkpoints", cd.Namespace, id)
}

func checkpointsOf(id string) []string {
	m, _ := filepath.Glob(filepath.Join(checkpointDir(id), "c*"))
	return m
}

// recoveryOf is container id's entry in `warmctl recovery ls --json` (read from the
// state directory), nil when it is not listed.
func recoveryOf(t *testing.T, id string) *recoveryEntry {
	t.Helper()
	out, err := exec.Command(cd.Env.Warmctl, "--state-dir", cd.WarmState, "--run-dir", cd.WarmRun, "-n", cd.Namespace, "--json", "recovery", "ls").Output()
	if err != nil {
		t.Fatalf("warmctl recovery ls: %v", err)
	}
	var es []recoveryEntry
	if err := json.Unmarshal(out, &es); err != nil {
		t.Fatalf("warmctl recovery ls --json: %v: %s", err, out)
	}
	for i := range es {
		if es[i].Container == id {
			return &es[i]
		}
	}
	return nil
}

type recoveryEntry struct {
	Container   string
	Status      *recovery.Status
	Checkpoints []struct{ Name string }
}

// counterContinues waits for counterApp's output after the first before fields to go on,
// from a checkpoint's counter (not 1: a cold start).
func counterContinues(t *testing.T, out *syncBuffer, before int) {
	t.Helper()
	var after []int
	waitFor(t, "output after the restore", func() bool {
		after = numbersAfter(out.String(), before+1)
		return len(after) >= 5
	})
	if after[len(after)-1] < 5 {
		t.Fatalf("counter after recovery %v: a cold start, not a restore", after)
	}
}

func numbersAfter(s string, skip int) []int {
	var out []int
	for i, f := range strings.Fields(s) {
		if i < skip {
			continue
		}
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// TestRecoveryKill9 kills the init with SIGKILL from outside: warm restores it from its
// latest checkpoint, its counter continues from there, the attached client keeps reading,
// no exit is reported; a later containerd Kill is reported as usual.
func TestRecoveryKill9(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "")
	c := e.container(counterApp, recoveryAnn(nil))
	var out syncBuffer
	task, exit := e.start(c, streams(nil, &out, io.Discard))
	// A signal through containerd that cannot end the task (SIGWINCH: ignored by
	// default) does not take its recovery away.
	if err := task.Kill(e.ctx, syscall.SIGWINCH); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two checkpoints", func() bool { return len(checkpointsOf(c.ID())) >= 2 })
	before := len(strings.Fields(out.String()))
	oldPid := task.Pid()
	killBetweenCheckpoints(t, c.ID(), oldPid)
	counterContinues(t, &out, before)
	select {
	case st := <-exit:
		t.Fatalf("exit reported for a recovered task: %+v", st)
	default:
	}
	// warmctl tells it, from the state directory.
	r := recoveryOf(t, c.ID())
	if r == nil || r.Status == nil || len(r.Checkpoints) == 0 {
		t.Fatalf("warmctl recovery ls: %+v", r)
	}
	if st := r.Status; st.State != recovery.StateWatching || st.Recoveries != 1 || st.LastCrash == nil ||
		st.LastCrash.ExitStatus != 137 || st.LastCrash.Result != "recovered" || st.LastCrash.Checkpoint == "" || st.LastCheckpoint == nil {
		t.Fatalf("warmctl recovery ls after a recovery: %+v (last crash %+v)", st, st.LastCrash)
	}
	t2, err := c.Task(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := t2.Status(e.ctx); err != nil || st.Status != containerd.Running || t2.Pid() == oldPid {
		t.Fatalf("after recovery: %+v pid %d (was %d) %v", st, t2.Pid(), oldPid, err)
	}
	// containerd's Kill is not recovered: the exit is reported as without warm.
	if err := t2.Kill(e.ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := exitOf(t, exit); code != 137 {
		t.Fatalf("exit %d after ctr kill", code)
	}
	if r := recoveryOf(t, c.ID()); r == nil || r.Status == nil || r.Status.State != recovery.StateExited {
		t.Fatalf("warmctl recovery ls after containerd's kill: %+v", r)
	}
	if _, err := task.Delete(e.ctx); err != nil {
		t.Fatal(err)
	}
	if cps := checkpointsOf(c.ID()); len(cps) != 0 {
		t.Fatalf("checkpoints left after delete: %v", cps)
	}
	if r := recoveryOf(t, c.ID()); r != nil {
		t.Fatalf("listed after its delete: %+v", r)
	}
}

// TestRecoveryNotForNormalExits: exit 0 is a normal end, and a failure with no checkpoint
// yet cannot be recovered; both are reported as without warm.
func TestRecoveryNotForNormalExits(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "")
	c := e.container([]string{"sh", "-c", "sleep 0.8; exit 0"}, recoveryAnn(nil))
	_, exit := e.start(c, nullIO())
	if code := exitOf(t, exit); code != 0 {
		t.Fatalf("exit %d", code)
	}
	c2 := e.container([]string{"sh", "-c", "exit 3"}, recoveryAnn(nil))
	_, exit2 := e.start(c2, nullIO())
	if code := exitOf(t, exit2); code != 3 {
		t.Fatalf("exit %d", code)
	}
}

// TestRecoveryFallbacks: a corrupted latest checkpoint makes warm use the previous one;
// with every checkpoint corrupted it retries, then reports the original exit.
func TestRecoveryFallbacks(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "")
	corrupt := func(dir string) {
		if err := os.WriteFile(filepath.Join(dir, "images", "inventory.img"), []byte("corrupt"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Checkpoints every 10s (the first after 10s would be too late): take them now by
	// asking containerd, which warm keeps too.
	run := func(corruptAll bool) (int, bool) {
		c := e.container(counterApp, recoveryAnn(map[string]string{"io.containerd.warm.checkpoint-interval": "400ms"}))
		var out syncBuffer
		task, exit := e.start(c, streams(nil, &out, io.Discard))
		waitFor(t, "three checkpoints", func() bool { return len(checkpointsOf(c.ID())) >= 3 })
		// Stop further checkpoints from replacing the corrupted ones: pause the task.
		if err := task.Pause(e.ctx); err != nil {
			t.Fatal(err)
		}
		cps := checkpointsOf(c.ID())
		if corruptAll {
			for _, d := range cps {
				corrupt(d)
			}
		} else {
			corrupt(cps[len(cps)-1]) // the newest (names sort by time)
		}
		if err := task.Resume(e.ctx); err != nil {
			t.Fatal(err)
		}
		pid := task.Pid()
		_ = syscall.Kill(int(pid), syscall.SIGKILL)
		select {
		case st := <-exit:
			code, _, _ := st.Result()
			return int(code), false
		case <-time.After(3 * time.Second):
			t2, _ := c.Task(e.ctx, nil)
			_ = t2.Kill(e.ctx, syscall.SIGKILL)
			exitOf(t, exit)
			return 0, t2.Pid() != pid
		}
	}
	if _, recovered := run(false); !recovered {
		t.Fatal("not recovered from the previous checkpoint when the latest was corrupted")
	}
	if code, recovered := run(true); recovered || code != 137 {
		t.Fatalf("all checkpoints corrupted: recovered %v, exit %d; want the original 137", recovered, code)
	}
}

// trapApp is counterApp with handlers: SIGHUP is taken as a reload (the task goes on),
// SIGTERM as a graceful stop (exit 3).
var trapApp = []string{"sh", "-c", "trap 'echo hup' HUP; trap 'exit 3' TERM; i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done"}

// TestRecoveryAfterSignals: what containerd's signal does to the init decides whether
// the exit that follows is recovered. A signal the init handles makes an exit within
// kill_grace the end asked for (a graceful stop: exit 3 reported; a crash right after a
// reload: reported too), and a crash after kill_grace a crash (recovered); a signal a
// PID namespace's init has no handler for is dropped by the kernel and takes nothing away.
func TestRecoveryAfterSignals(t *testing.T) {
	need(t)
	cfg := recoveryConfig(t, "")
	start := func(t *testing.T, app []string, grace string) (containerd.Container, containerd.Task, <-chan containerd.ExitStatus, *syncBuffer) {
		e := newEnv(t, harness.Warm)
		e.warmCfg = cfg
		c := e.container(app, recoveryAnn(map[string]string{"io.containerd.warm.kill-grace": grace, "io.containerd.warm.checkpoint-interval": "1s"}))
		out := &syncBuffer{}
		task, exit := e.start(c, streams(nil, out, io.Discard))
		waitFor(t, "a checkpoint", func() bool { return len(checkpointsOf(c.ID())) >= 1 })
		return c, task, exit, out
	}
	// kill sends sig through containerd right after a checkpoint, well before the next
	// (during one, the shim takes the task's signal state as unreadable, CRIU holding the
	// task, and the signal as handled). With handled, the task's shell must have a
	// handler for sig: a shell cannot trap a signal it started with ignored (twice in CI
	// the SIGHUP trap was refused that way, inherited from a nohup; the harness now
	// gives containerd the default, internal/childsignals).
	kill := func(t *testing.T, c containerd.Container, task containerd.Task, sig syscall.Signal, handled bool) {
		t.Helper()
		nextCheckpoint(c.ID(), 5*time.Second)
		if st, err := procfs.ReadSignals(int(task.Pid())); handled && err == nil && !procfs.Has(st.Caught, int(sig)) {
			t.Fatalf("the task's shell has no %v handler (signal state %+v): it started with the signal ignored?", sig, st)
		}
		if err := task.Kill(cd.Context(context.Background()), sig); err != nil {
			t.Fatal(err)
		}
	}
	recovered := func(t *testing.T, c containerd.Container, exit <-chan containerd.ExitStatus, out *syncBuffer, pid uint32) {
		t.Helper()
		before := len(strings.Fields(out.String()))
		killBetweenCheckpoints(t, c.ID(), pid)
		counterContinues(t, out, before)
		select {
		case st := <-exit:
			t.Fatalf("exit reported for a task that should have been recovered: %+v", st)
		default:
		}
	}

	// reloaded waits for the trap's output; if it never comes, the failure says whether
	// the output went on without it (the signal was lost) or stopped (the task or its
	// output stalled).
	reloaded := func(t *testing.T, out *syncBuffer) {
		t.Helper()
		waitForf(t, func() string {
			o := out.String()
			return fmt.Sprintf("the reload (%d lines of output so far, the last %q)", len(strings.Fields(o)), o[max(0, len(o)-40):])
		}, func() bool { return strings.Contains(out.String(), "hup") })
	}
	t.Run("handled, crash after kill_grace", func(t *testing.T) {
		c, task, exit, out := start(t, trapApp, "1s")
		kill(t, c, task, syscall.SIGHUP, true)
		reloaded(t, out)
		if st, err := recovery.ReadStatus(checkpointDir(c.ID())); err != nil || st.State != recovery.StateStopping || st.StoppingUntil == nil {
			t.Fatalf("status within kill_grace: %+v %v", st, err)
		}
		// No checkpoint is taken within kill_grace (the task may be stopping); the next
		// comes after it, and a crash then is recovered.
		cps := checkpointsOf(c.ID())
		newest := cps[len(cps)-1]
		time.Sleep(time.Second)
		waitFor(t, "a checkpoint after kill_grace", func() bool {
			cps := checkpointsOf(c.ID())
			return len(cps) > 0 && cps[len(cps)-1] != newest
		})
		recovered(t, c, exit, out, task.Pid())
	})
	t.Run("handled, crash within kill_grace", func(t *testing.T) {
		c, task, exit, out := start(t, trapApp, "1m")
		kill(t, c, task, syscall.SIGHUP, true)
		reloaded(t, out)
		_ = syscall.Kill(int(task.Pid()), syscall.SIGKILL)
		if code := exitOf(t, exit); code != 137 {
			t.Fatalf("exit %d, want 137 reported (not recovered)", code)
		}
	})
	t.Run("handled stop", func(t *testing.T) {
		c, task, exit, _ := start(t, trapApp, "1m")
		kill(t, c, task, syscall.SIGTERM, true)
		if code := exitOf(t, exit); code != 3 {
			t.Fatalf("exit %d, want the graceful stop's 3 reported", code)
		}
	})
	t.Run("dropped by the namespace's init", func(t *testing.T) {
		c, task, exit, out := start(t, counterApp, "")
		kill(t, c, task, syscall.SIGTERM, false) // sh has no handler: the kernel drops it
		if st, err := recovery.ReadStatus(checkpointDir(c.ID())); err != nil || st.State != recovery.StateWatching {
			t.Fatalf("status after a signal the kernel dropped: %+v %v", st, err)
		}
		recovered(t, c, exit, out, task.Pid())
	})
}

// TestRecoveryHealthAndCrashLoop: a failing health check retries and gives up; a task
// that keeps crashing stops being recovered after crash_loop_max recoveries.
func TestRecoveryHealthAndCrashLoop(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "crash_loop_max = 3\ncrash_loop_window = \"1m\"\n")
	c := e.container(counterApp, recoveryAnn(map[string]string{"io.containerd.warm.health": "file:/never"}))
	task, exit := e.start(c, nullIO())
	waitFor(t, "a checkpoint", func() bool { return len(checkpointsOf(c.ID())) >= 1 })
	killBetweenCheckpoints(t, c.ID(), task.Pid())
	if code := exitOf(t, exit); code != 137 {
		t.Fatalf("exit %d after failed health checks", code)
	}
	// Crash loop: the task crashes a moment after every restore.
	c2 := e.container([]string{"sh", "-c", "sleep 0.6; exit 1"}, recoveryAnn(map[string]string{"io.containerd.warm.checkpoint-interval": "200ms"}))
	ev := e.watch(c2.ID())
	task2, exit2 := e.start(c2, nullIO())
	start := time.Now()
	code := exitOf(t, exit2)
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	if time.Since(start) < time.Second {
		t.Fatalf("exit after %v: recovery never ran", time.Since(start))
	}
	// Restored tasks that die while the recovery checks them are the recovery's
	// business: their exits start no second recovery beside it and are not published
	// (one ran concurrently, and a Delete that stopped its restore left CRIU's mount
	// and the cgroups behind).
	if _, err := task2.Delete(e.ctx); err != nil {
		t.Fatal(err)
	}
	waitForf(t, func() string { return fmt.Sprintf("the delete event (events: %v)", ev.list()) }, func() bool { return contains(ev.list(), "/tasks/delete") })
	exits := 0
	for _, topic := range ev.list() {
		if topic == "/tasks/exit" {
			exits++
		}
	}
	if exits != 1 {
		t.Fatalf("%d exit events for one task: %v", exits, ev.list())
	}
}

// TestRecoveryFullDisk: checkpoints on a full filesystem fail, the error is reported
// (logged), the task keeps running, and the previous checkpoint stays valid (used by the
// recovery that follows).
func TestRecoveryFullDisk(t *testing.T) {
	need(t)
	state := filepath.Join(tempDir(t), "small")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", state, "tmpfs", 0, "size=8m,mode=0700"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(state, syscall.MNT_DETACH) })
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "")
	cfg, _ := os.ReadFile(e.warmCfg)
	cfgStr := strings.Replace(string(cfg), "state_dir = ", "state_dir = \""+state+"\"\n# suite: ", 1)
	if err := os.WriteFile(e.warmCfg, []byte(cfgStr), 0o600); err != nil {
		t.Fatal(err)
	}
	c := e.container(counterApp, recoveryAnn(nil))
	var out syncBuffer
	task, exit := e.start(c, streams(nil, &out, io.Discard))
	dir := filepath.Join(state, "checkpoints", cd.Namespace, c.ID())
	waitFor(t, "a checkpoint", func() bool { m, _ := filepath.Glob(filepath.Join(dir, "c*")); return len(m) >= 1 })
	// Fill the filesystem.
	fill := filepath.Join(state, "fill")
	f, _ := os.Create(fill)
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	time.Sleep(1 * time.Second) // a few periodic checkpoints fail meanwhile
	if st, err := task.Status(e.ctx); err != nil || st.Status != containerd.Running {
		t.Fatalf("task after failed checkpoints: %+v %v", st, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "c*")); len(m) == 0 {
		t.Fatal("the previous checkpoint was lost")
	}
	pid := task.Pid()
	killBetweenCheckpoints(t, c.ID(), pid)
	// A dump on the full disk may still be running (it holds runc's lock on the
	// container): the recovery follows it.
	t2 := waitRestored(t, e, c, pid)
	os.Remove(fill)
	_ = t2.Kill(e.ctx, syscall.SIGKILL)
	exitOf(t, exit)
	_, _ = task.Delete(e.ctx)
}

// TestRecoveryPooled recovers a container served from the pool.
func TestRecoveryPooled(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "")
	name := "rec-" + shortName(t)
	seed := makeTemplate(t, e, name)
	c := e.container(echoApp, templateAnn(name, false), recoveryAnn(nil))
	r, w := io.Pipe()
	defer w.Close()
	var out syncBuffer
	task, exit := e.start(c, streams(r, &out, io.Discard))
	if got := askSeed(t, w, &out, "before"); got != seed {
		t.Fatalf("not served from the pool: seed %s", got)
	}
	if st, _, _ := harness.NewCtl(cd.WarmRun, cd.Namespace).Pool(name); st.Hits != 1 {
		t.Fatalf("not a hit: %+v", st)
	}
	waitFor(t, "a checkpoint", func() bool { return len(checkpointsOf(c.ID())) >= 1 })
	pid := task.Pid()
	killBetweenCheckpoints(t, c.ID(), pid)
	t2 := waitRestored(t, e, c, pid)
	if got := askSeed(t, w, &out, "after"); got != seed {
		t.Fatalf("after recovery the seed is %s, want %s", got, seed)
	}
	_ = t2.Kill(e.ctx, syscall.SIGKILL)
	exitOf(t, exit)
	_ = context.Background
}

// TestRecoveryStdin: a recovered task keeps reading the client's stdin.
func TestRecoveryStdin(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "")
	c := e.container(echoApp, recoveryAnn(nil))
	r, w := io.Pipe()
	defer w.Close()
	var out syncBuffer
	task, exit := e.start(c, streams(r, &out, io.Discard))
	seed := askSeed(t, w, &out, "before")
	waitFor(t, "a checkpoint", func() bool { return len(checkpointsOf(c.ID())) >= 1 })
	pid := task.Pid()
	killBetweenCheckpoints(t, c.ID(), pid)
	t2 := waitRestored(t, e, c, pid)
	if got := askSeed(t, w, &out, "after"); got != seed {
		t.Fatalf("after recovery the seed is %s, want %s", got, seed)
	}
	_ = t2.Kill(e.ctx, syscall.SIGKILL)
	exitOf(t, exit)
}

// waitRestored waits until the container's task runs with another pid than pid.
func waitRestored(t *testing.T, e *env, c containerd.Container, pid uint32) containerd.Task {
	t.Helper()
	var t2 containerd.Task
	waitFor(t, "the restored task", func() bool {
		var err error
		t2, err = c.Task(e.ctx, nil)
		if err != nil {
			return false
		}
		st, err := t2.Status(e.ctx)
		return err == nil && st.Status == containerd.Running && t2.Pid() != pid
	})
	return t2
}

// TestRecoveryInputDuringRecovery: input sent right after the task died is held for the
// restored task, not lost to the dead one.
func TestRecoveryInputDuringRecovery(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "")
	c := e.container(echoApp, recoveryAnn(nil))
	r, w := io.Pipe()
	defer w.Close()
	var out syncBuffer
	task, exit := e.start(c, streams(r, &out, io.Discard))
	seed := askSeed(t, w, &out, "before")
	waitFor(t, "a checkpoint", func() bool { return len(checkpointsOf(c.ID())) >= 1 })
	killBetweenCheckpoints(t, c.ID(), task.Pid())
	if got := askSeed(t, w, &out, "during"); got != seed {
		t.Fatalf("seed %s, want %s", got, seed)
	}
	t2, _ := c.Task(e.ctx, nil)
	_ = t2.Kill(e.ctx, syscall.SIGKILL)
	exitOf(t, exit)
}

// TestRecoveryKillWins: containerd's Kill during a recovery abandons it; the original
// exit is reported and no restored task is left (the suite's teardown checks).
func TestRecoveryKillWins(t *testing.T) {
	e, c, task, exit := recoveringContainer(t)
	_ = task.Kill(e.ctx, syscall.SIGKILL)
	if code := exitOf(t, exit); code != 137 {
		t.Fatalf("exit %d", code)
	}
	waitForLog(t, c.ID(), "recovery abandoned")
}

// recoveringContainer starts a recovered container and crashes it; it returns while the
// recovery runs its first health check, which slow, failing checks keep going long enough
// to be interrupted.
func recoveringContainer(t *testing.T) (*env, containerd.Container, containerd.Task, <-chan containerd.ExitStatus) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "")
	cfg, _ := os.ReadFile(e.warmCfg)
	if err := os.WriteFile(e.warmCfg, []byte(strings.Replace(string(cfg), "health_timeout = \"500ms\"", "health_timeout = \"3s\"", 1)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := e.container(counterApp, recoveryAnn(map[string]string{"io.containerd.warm.health": "file:/never"}))
	task, exit := e.start(c, nullIO())
	waitFor(t, "a checkpoint", func() bool { return len(checkpointsOf(c.ID())) >= 1 })
	killBetweenCheckpoints(t, c.ID(), task.Pid())
	time.Sleep(300 * time.Millisecond) // the recovery is running its first health check
	return e, c, task, exit
}

// waitForLog waits for a line about container id that holds substr, in containerd's
// log (which carries the shims') or the pool shim's own log file (all a pool shim writes
// once the container whose bundle carried its output is gone).
func waitForLog(t *testing.T, id, substr string) {
	t.Helper()
	poolLog := filepath.Join(cd.WarmRun, cd.Namespace, "pool-shim.log")
	waitFor(t, "the shim's log: "+substr, func() bool {
		if cd.LogLines(id, substr) > 0 {
			return true
		}
		data, _ := os.ReadFile(poolLog)
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, id) && strings.Contains(l, substr) {
				return true
			}
		}
		return false
	})
}

// TestRecoveryExecsReportedExited: execs alive when the init crashes are reported as
// exited; the task itself is recovered.
func TestRecoveryExecsReportedExited(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "")
	// The checkpoint is taken (through containerd) before the exec starts, so the
	// restored tree does not hold the exec's process.
	c := e.container(counterApp, oci.WithAnnotations(map[string]string{"io.containerd.warm.recovery": "on"}))
	task, exit := e.start(c, nullIO())
	checkpointForRecovery(t, e, c, task)
	spec, _ := c.Spec(e.ctx)
	ps := *spec.Process
	ps.Args = []string{"sleep", "1000"}
	p, err := task.Exec(e.ctx, "x1", &ps, nullIO())
	if err != nil {
		t.Fatal(err)
	}
	pexit, _ := p.Wait(e.ctx)
	if err := p.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	pid := task.Pid()
	killBetweenCheckpoints(t, c.ID(), pid)
	if code := exitOf(t, pexit); code != 137 {
		t.Fatalf("exec exit %d, want 137 (killed with the init)", code)
	}
	t2 := waitRestored(t, e, c, pid)
	_ = t2.Kill(e.ctx, syscall.SIGKILL)
	exitOf(t, exit)
}

// killBetweenCheckpoints kills the init with SIGKILL right after a periodic checkpoint
// of the container completed, so the kill does not land in the middle of a dump (CRIU was
// once seen hanging when the task died under it; see the recovery notes).
func killBetweenCheckpoints(t *testing.T, id string, pid uint32) {
	t.Helper()
	nextCheckpoint(id, 2*time.Second)
	if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

// nextCheckpoint waits, at most max, for a checkpoint of container id newer than its
// newest now (polling every 5 ms: it returns as the checkpoint is committed).
func nextCheckpoint(id string, max time.Duration) {
	newest := func() string {
		cps := checkpointsOf(id)
		if len(cps) == 0 {
			return ""
		}
		return cps[len(cps)-1]
	}
	before := newest()
	for end := time.Now().Add(max); newest() == before && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRecoveryStandby: with io.containerd.warm.recovery-standby=on, each periodic
// checkpoint is restored ahead of time into a frozen standby on the container's own
// rootfs; a kill -9 is recovered by adopting it (no CRIU restore at crash time), the
// counter goes on from the checkpoint, and deleting the container leaves no standby,
// runc state, mount or directory behind.
func TestRecoveryStandby(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "")
	c := e.container(counterApp, recoveryAnn(map[string]string{
		"io.containerd.warm.checkpoint-interval": "1s", "io.containerd.warm.recovery-standby": "on"}))
	var out syncBuffer
	task, exit := e.start(c, streams(nil, &out, io.Discard))
	logHas := func(substr string) int { return cd.LogLines("container="+c.ID(), substr) }
	waitFor(t, "a recovery standby", func() bool { return logHas(`msg="recovery standby ready"`) >= 1 })
	// Twice: the second crash is recovered from the standby made after the first.
	oldPid := task.Pid()
	var t2 containerd.Task
	for round := 1; round <= 2; round++ {
		// Kill right after a fresh standby is ready, well before the next checkpoint.
		ready := logHas(`msg="recovery standby ready"`)
		waitFor(t, "a fresh standby", func() bool { return logHas(`msg="recovery standby ready"`) > ready })
		standbys, _ := filepath.Glob(filepath.Join(cd.RuncRoot, cd.Namespace, c.ID()+"-standby-*"))
		if len(standbys) != 1 {
			t.Fatalf("runc containers of standbys: %v, want one", standbys)
		}
		before := len(strings.Fields(out.String()))
		if err := syscall.Kill(int(oldPid), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		counterContinues(t, &out, before)
		fromStandby := cd.LogLines("container="+c.ID(), `msg="task recovered"`, "standby=true")
		if n := logHas(`msg="task recovered"`); n != round || fromStandby != round {
			t.Fatalf("recoveries logged %d, from a standby %d: want %d, all adopted from a standby", n, fromStandby, round)
		}
		var err error
		if t2, err = c.Task(e.ctx, nil); err != nil {
			t.Fatal(err)
		}
		if st, err := t2.Status(e.ctx); err != nil || st.Status != containerd.Running || t2.Pid() == oldPid {
			t.Fatalf("after recovery: %+v pid %d (was %d) %v", st, t2.Pid(), oldPid, err)
		}
		oldPid = t2.Pid()
	}
	// Every task RPC works on the adopted standby.
	if err := t2.Pause(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := t2.Resume(e.ctx); err != nil {
		t.Fatal(err)
	}
	if pids, err := t2.Pids(e.ctx); err != nil || len(pids) == 0 {
		t.Fatalf("pids %v %v", pids, err)
	}
	if err := t2.Kill(e.ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := exitOf(t, exit); code != 137 {
		t.Fatalf("exit %d after containerd's kill", code)
	}
	if _, err := task.Delete(e.ctx); err != nil {
		t.Fatal(err)
	}
	var left []string
	for i := 0; i < 200; i++ {
		left, _ = filepath.Glob(filepath.Join(cd.RuncRoot, cd.Namespace, c.ID()+"-standby-*"))
		if _, err := os.Stat(filepath.Join(cd.WarmRun, cd.Namespace, "standby", c.ID())); err == nil {
			left = append(left, filepath.Join(cd.WarmRun, cd.Namespace, "standby", c.ID()))
		}
		if len(left) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Fatalf("left after delete: %v", left)
	}
}

// TestRecoveryCheckpointTimeout: a checkpoint whose CRIU never answers (a stand-in that
// sleeps, as CRIU was seen to hang on a dying task) is killed after checkpoint_timeout,
// with the CRIU under it; the task keeps running and containerd can still kill and
// delete it (runc's lock on the container was released).
func TestRecoveryCheckpointTimeout(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = configWithCriuStandIn(t, "3601", "")
	c := e.container(counterApp, recoveryAnn(nil))
	task, exit := e.start(c, nullIO())
	waitForLog(t, "container="+c.ID(), "checkpoint ran past checkpoint_timeout")
	if st, err := task.Status(e.ctx); err != nil || st.Status != containerd.Running {
		t.Fatalf("task after a killed checkpoint: %+v %v", st, err)
	}
	if err := task.Kill(e.ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := exitOf(t, exit); code != 137 {
		t.Fatalf("exit %d", code)
	}
	if _, err := task.Delete(e.ctx); err != nil {
		t.Fatal(err)
	}
	// No stand-in CRIU is left running.
	waitFor(t, "no hanging CRIU left", func() bool { return !sleeping("3601") })
}

// checkpointForRecovery checkpoints a task through containerd (the Checkpoint RPC) and
// checks that the shim kept that checkpoint as the task's only one for recovery.
func checkpointForRecovery(t *testing.T, e *env, c containerd.Container, task containerd.Task) {
	t.Helper()
	ck, err := task.Checkpoint(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.client.ImageService().Delete(context.WithoutCancel(e.ctx), ck.Name()) })
	cps := checkpointsOf(c.ID())
	if len(cps) != 1 {
		t.Fatalf("the Checkpoint RPC's checkpoint was not kept for recovery: %v", cps)
	}
	// Its copy records warm's network lock (containerd's image keeps CRIU's default).
	if lock, err := store.NetworkLock(filepath.Join(cps[0], "images")); err != nil || lock != "skip" {
		t.Fatalf("the kept checkpoint records network lock %q (%v), want skip", lock, err)
	}
}

// sleeping reports whether a live process runs `sleep ARG` (the CRIU stand-ins' marker).
func sleeping(arg string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if data, _ := os.ReadFile(p); strings.Contains(string(data), "sleep\x00"+arg) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			if !procfs.Dead(pid) {
				return true
			}
		}
	}
	return false
}

// withCriu rewrites the warm config at path to run criu as the given program.
func withCriu(t *testing.T, path, criu string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "criu = ") {
			l = fmt.Sprintf("criu = %q", criu)
		}
		lines = append(lines, l)
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRecoveryDeleteWins: containerd's Delete (with the kill ctr and CRI send first)
// during a recovery wins like a Kill: the recovery is abandoned, Delete returns the
// original exit, and the checkpoints go with the container.
func TestRecoveryDeleteWins(t *testing.T) {
	e, c, task, _ := recoveringContainer(t)
	// A recovery takes a second or two here: a minute means the shim is stuck.
	dctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	st, err := task.Delete(dctx, containerd.WithProcessKill)
	if err != nil {
		// Seen once, under CI load (the kill had landed during a dump): the shim said
		// nothing more and the Delete waited 3 minutes. Its goroutines say where.
		t.Fatalf("delete during a recovery: %v\n--- the shim's goroutines:\n%s", err, cd.ShimStacks(c.ID()))
	}
	if st.ExitCode() != 137 {
		t.Fatalf("delete reported exit %d, want the original 137", st.ExitCode())
	}
	if cps := checkpointsOf(c.ID()); len(cps) != 0 {
		t.Fatalf("checkpoints left after delete: %v", cps)
	}
	if _, err := c.Task(e.ctx, nil); err == nil {
		t.Fatal("the task is still there after Delete")
	}
	// The Delete met a recovery in progress.
	waitForLog(t, c.ID(), "recovery abandoned")
}

// TestRecoveryKillDuringDump: a task killed while CRIU holds it for a periodic checkpoint
// is a zombie only CRIU is told about (CRIU would wait for it until its own 10 s
// timeout); the shim sees it die, stops CRIU, and recovers the task from the previous
// checkpoint.
func TestRecoveryKillDuringDump(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "")
	c := e.container(counterApp, recoveryAnn(map[string]string{"io.containerd.warm.checkpoint-interval": "100ms"}))
	var out syncBuffer
	task, exit := e.start(c, streams(nil, &out, io.Discard))
	waitFor(t, "a checkpoint", func() bool { return len(checkpointsOf(c.ID())) >= 1 })
	// Kill once CRIU has seized the task for the next dump.
	seized := func() bool {
		logs, _ := filepath.Glob(filepath.Join(checkpointDir(c.ID()), ".tmp-*", "work", "dump.log"))
		for _, l := range logs {
			if data, _ := os.ReadFile(l); strings.Contains(string(data), "Seized task") {
				return true
			}
		}
		return false
	}
	for i := 0; i < 20000 && !seized(); i++ {
		time.Sleep(500 * time.Microsecond)
	}
	if !seized() {
		t.Fatal("never saw CRIU seize the task")
	}
	before := len(strings.Fields(out.String()))
	if err := syscall.Kill(int(task.Pid()), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The shim stops CRIU once it sees the task dead (it polls every 5 ms); CRIU may fail
	// on its own first, when the task vanishes under it: either way the dump ends, and
	// the log says the task died (not that it keeps running).
	waitForLog(t, "container="+c.ID(), "periodic checkpoint stopped: the task died")
	waitForLog(t, "container="+c.ID(), `msg="task recovered"`)
	if n := cd.LogLines("container="+c.ID(), "periodic checkpoint failed"); n != 0 {
		t.Fatalf("%d periodic checkpoints said to have failed with the task running on", n)
	}
	waitFor(t, "output after the recovery", func() bool { return len(numbersAfter(out.String(), before+1)) >= 3 })
	select {
	case st := <-exit:
		t.Fatalf("exit reported for a recovered task: %+v", st)
	default:
	}
}

// TestRecoveryCheckpointPreFreeze: the shim freezes the task itself for each periodic
// checkpoint (CRIU's own freeze polls every 100 ms) and thaws it after: the log says so,
// and the task runs on between checkpoints. A task an operator paused stays paused
// across checkpoint intervals (the checkpoint's thaw never undoes a Pause).
func TestRecoveryCheckpointPreFreeze(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "")
	c := e.container(counterApp, recoveryAnn(nil))
	var out syncBuffer
	task, exit := e.start(c, streams(nil, &out, io.Discard))
	prefrozen := func() int { return cd.LogLines("container="+c.ID(), "prefrozen=true") }
	waitFor(t, "two checkpoints the shim froze the task for", func() bool { return prefrozen() >= 2 })
	if n := cd.LogLines("container="+c.ID(), "prefrozen=false"); n != 0 {
		t.Fatalf("%d periodic checkpoints without the shim's freeze", n)
	}
	n := len(strings.Fields(out.String()))
	waitFor(t, "the counter running after the checkpoints", func() bool { return len(strings.Fields(out.String())) >= n+5 })

	if err := task.Pause(e.ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // three checkpoint intervals
	if st, err := task.Status(e.ctx); err != nil || st.Status != containerd.Paused {
		t.Fatalf("after a second paused: %+v %v", st, err)
	}
	if err := task.Resume(e.ctx); err != nil {
		t.Fatal(err)
	}
	n = len(strings.Fields(out.String()))
	waitFor(t, "the counter running after resume", func() bool { return len(strings.Fields(out.String())) >= n+5 })
	if err := task.Kill(e.ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exitOf(t, exit)
}

// TestRecoveryDeleteDuringCheckpoint kills and deletes recoverable tasks while a periodic
// checkpoint dumps them: the Delete waits for the checkpoint (runc refuses to delete a
// container whose cgroup the checkpoint holds frozen), which the shim stops as soon as
// the task is dying.
func TestRecoveryDeleteDuringCheckpoint(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = recoveryConfig(t, "")
	// Each round kills at another moment of the dump: right as it starts, then 10, 20 ...
	// ms into it (the shim's freeze, runc's and CRIU's start, CRIU's seize and dump).
	for i := 0; i < 12; i++ {
		c := e.container(counterApp, recoveryAnn(map[string]string{"io.containerd.warm.checkpoint-interval": "100ms"}))
		task, _ := e.start(c, nullIO())
		waitFor(t, "a checkpoint", func() bool { return len(checkpointsOf(c.ID())) >= 1 })
		dumping := func() bool {
			m, _ := filepath.Glob(filepath.Join(checkpointDir(c.ID()), ".tmp-*"))
			return len(m) > 0
		}
		for j := 0; j < 20000 && !dumping(); j++ {
			time.Sleep(200 * time.Microsecond)
		}
		time.Sleep(time.Duration(i%6) * 10 * time.Millisecond)
		// Well under CRIU's own 10 s timeout and checkpoint_timeout: a dump that hangs on
		// the dying task (a PID namespace's init killed while its child is traced by
		// CRIU stays in do_exit) must be stopped, not waited for.
		ctx, cancel := context.WithTimeout(e.ctx, 8*time.Second)
		_, err := task.Delete(ctx, containerd.WithProcessKill)
		cancel()
		if err != nil {
			t.Fatalf("round %d: delete during a checkpoint: %v", i, err)
		}
		if err := c.Delete(e.ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRecoveryRestoreHangs: a recovery whose CRIU restore never ends (a stand-in that
// sleeps from the moment the test says so; CRIU was seen to wait forever on a task
// killed mid-restore) does not hold the container: containerd's Delete stops it at once,
// and without a Delete the restore is killed after checkpoint_timeout, the recovery
// gives up and the original exit is reported.
func TestRecoveryRestoreHangs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		delete bool
	}{{"delete stops it", true}, {"checkpoint_timeout stops it", false}} {
		t.Run(tc.name, func(t *testing.T) {
			need(t)
			e := newEnv(t, harness.Warm)
			dir := tempDir(t)
			hangFile := filepath.Join(dir, "hang")
			wrapper := filepath.Join(dir, "criu")
			script := fmt.Sprintf("#!/bin/sh\n[ -e %q ] && exec sleep 3602\nexec %q \"$@\"\n", hangFile, cd.Env.Criu)
			if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil {
				t.Fatal(err)
			}
			timeout := "1m"
			if !tc.delete {
				timeout = "2s"
			}
			base := recoveryConfig(t, "checkpoint_timeout = \""+timeout+"\"\n")
			withCriu(t, base, wrapper)
			e.warmCfg = base
			// No periodic checkpoints (their CRIU would hang too): one taken through
			// containerd is the recovery's.
			c := e.container(counterApp, oci.WithAnnotations(map[string]string{"io.containerd.warm.recovery": "on"}))
			task, exit := e.start(c, nullIO())
			checkpointForRecovery(t, e, c, task)
			if err := os.WriteFile(hangFile, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(int(task.Pid()), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			hanging := func() bool { return sleeping("3602") }
			if tc.delete {
				waitFor(t, "a restore that hangs", hanging)
				dctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
				defer cancel()
				st, err := task.Delete(dctx, containerd.WithProcessKill)
				if err != nil {
					t.Fatalf("delete during a hung restore: %v\n--- the shim's goroutines:\n%s", err, cd.ShimStacks(c.ID()))
				}
				if st.ExitCode() != 137 {
					t.Fatalf("delete reported exit %d, want the original 137", st.ExitCode())
				}
				waitForLog(t, c.ID(), "a restore in progress was stopped")
			} else {
				waitForLog(t, c.ID(), "restore ran past checkpoint_timeout")
				if code := exitOf(t, exit); code != 137 {
					t.Fatalf("exit %d after the recovery gave up, want the original 137", code)
				}
				if _, err := task.Delete(e.ctx); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "no hanging CRIU left", func() bool { return !hanging() })
		})
	}
}

// TestCheckpointNetworkLock: the checkpoints warm takes itself (here: periodic ones for
// recovery) run CRIU with the network lock of warm's configuration (criu_network_lock,
// default skip) from a file warm writes, and a recovery from such a checkpoint works;
// containerd's own checkpoint (the Checkpoint RPC) keeps CRIU's defaults.
func TestCheckpointNetworkLock(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	dir := tempDir(t)
	spyLog := filepath.Join(dir, "criu.log")
	spy := filepath.Join(dir, "criu")
	script := fmt.Sprintf("#!/bin/sh\necho \"CRIU_CONFIG_FILE=${CRIU_CONFIG_FILE:-} $(cat \"${CRIU_CONFIG_FILE:-/dev/null}\" 2>&1)\" >> %s\nexec %s \"$@\"\n", spyLog, cd.Env.Criu)
	if err := os.WriteFile(spy, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := recoveryConfig(t, "")
	withCriu(t, cfg, spy)
	e.warmCfg = cfg
	calls := func() []string {
		data, _ := os.ReadFile(spyLog)
		return strings.Split(strings.TrimSpace(string(data)), "\n")
	}

	// containerd's checkpoint of a container without recovery: CRIU's defaults.
	plain := e.container(counterApp)
	ptask, pexit := e.start(plain, nullIO())
	ck, err := ptask.Checkpoint(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.client.ImageService().Delete(context.WithoutCancel(e.ctx), ck.Name()) })
	rpc := calls()
	if len(rpc) == 0 || rpc[0] == "" {
		t.Fatal("the spy saw no CRIU for containerd's checkpoint")
	}
	for _, l := range rpc {
		if strings.TrimSpace(l) != "CRIU_CONFIG_FILE=" {
			t.Fatalf("containerd's checkpoint ran CRIU with warm's configuration: %q", l)
		}
	}
	_ = ptask.Kill(e.ctx, syscall.SIGKILL)
	exitOf(t, pexit)
	if _, err := ptask.Delete(e.ctx); err != nil {
		t.Fatal(err)
	}

	// Periodic checkpoints: warm's file, network-lock skip; and a recovery from them.
	c := e.container(counterApp, recoveryAnn(nil))
	var out syncBuffer
	task, exit := e.start(c, streams(nil, &out, io.Discard))
	waitFor(t, "two checkpoints", func() bool { return len(checkpointsOf(c.ID())) >= 2 })
	want := fmt.Sprintf("CRIU_CONFIG_FILE=%s network-lock skip", filepath.Join(cd.WarmRun, "criu", "criu-network-lock-skip.conf"))
	own := calls()[len(rpc):]
	if len(own) < 2 {
		t.Fatalf("the spy saw %d CRIU runs for two checkpoints", len(own))
	}
	for _, l := range own {
		if l != want {
			t.Fatalf("a periodic checkpoint ran CRIU with %q, want %q", l, want)
		}
	}
	// CRIU recorded it in the images (their restore skips the lock too).
	read := 0
	for _, cp := range checkpointsOf(c.ID()) {
		lock, err := store.NetworkLock(filepath.Join(cp, "images"))
		if os.IsNotExist(err) {
			continue // pruned meanwhile
		}
		if err != nil || lock != "skip" {
			t.Fatalf("checkpoint %s records network lock %q (%v), want skip", cp, lock, err)
		}
		read++
	}
	if read == 0 {
		t.Fatal("no checkpoint's inventory could be read")
	}
	before := len(strings.Fields(out.String()))
	killBetweenCheckpoints(t, c.ID(), task.Pid())
	counterContinues(t, &out, before)
	if err := task.Kill(e.ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exitOf(t, exit)
	if _, err := task.Delete(e.ctx); err != nil {
		t.Fatal(err)
	}
}

// TestTemplateCheckpointTimeout: the checkpoint that makes a template, whose CRIU never
// answers (a stand-in that sleeps, as CRIU waits for a breakpoint a host never fires),
// is killed after checkpoint_timeout with the CRIU under it: no template is made, and
// the container keeps running and answering.
func TestTemplateCheckpointTimeout(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	e.warmCfg = configWithCriuStandIn(t, "3602", "")
	name := "hang-" + shortName(t)
	c := e.container(echoApp, templateAnn(name, true))
	r, w := io.Pipe()
	defer w.Close()
	var out syncBuffer
	task, exit := e.start(c, streams(r, &out, io.Discard))
	seed := askSeed(t, w, &out, "before")
	waitFor(t, "the stand-in CRIU running", func() bool { return sleeping("3602") })
	waitForLog(t, "container="+c.ID(), "template checkpoint ran past checkpoint_timeout")
	waitFor(t, "no hanging CRIU left", func() bool { return !sleeping("3602") })
	if got := askSeed(t, w, &out, "after"); got != seed {
		t.Fatalf("the container answers with seed %s after the killed checkpoint, %s before", got, seed)
	}
	if st, err := task.Status(e.ctx); err != nil || st.Status != containerd.Running {
		t.Fatalf("task after a killed template checkpoint: %+v %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(cd.WarmState, "templates", cd.Namespace, name)); !os.IsNotExist(err) {
		t.Fatalf("template %s after its checkpoint was killed: %v, want none", name, err)
	}
	killAndDelete(t, e, nil, task, exit)
}

// configWithCriuStandIn writes a CRIU stand-in that runs `sleep MARKER` instead of CRIU
// (only while hangFile exists, if one is given; the real CRIU otherwise) and a copy of
// the suite's warm configuration that runs it, with checkpoint_timeout 1s; it returns
// the configuration's path.
func configWithCriuStandIn(t *testing.T, marker, hangFile string) string {
	t.Helper()
	dir := tempDir(t)
	script := "#!/bin/sh\nexec sleep " + marker + "\n"
	if hangFile != "" {
		script = fmt.Sprintf("#!/bin/sh\n[ -e %q ] && exec sleep %s\nexec %q \"$@\"\n", hangFile, marker, cd.Env.Criu)
	}
	standIn := filepath.Join(dir, "criu")
	if err := os.WriteFile(standIn, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile(cd.WarmCfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "warm.toml")
	if err := os.WriteFile(cfg, append(base, "\n[recovery]\ncheckpoint_timeout = \"1s\"\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	withCriu(t, cfg, standIn)
	return cfg
}
