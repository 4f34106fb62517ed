package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/internal/procfs"
	"github.com/warmshim/warm/pool"
	"github.com/warmshim/warm/store"
	"github.com/warmshim/warm/test/harness"

	"github.com/warmshim/warm/internal/testenv"
)

// echoApp initialises (a random seed stands for expensive state), says ready, then
// answers each line on stdin with a line carrying the seed: a sandbox restored from the
// template answers with the template's seed, a cold start with a new one.
var echoApp = []string{"sh", "-c", `seed=$RANDOM$RANDOM; n=0; while [ $n -lt 200 ]; do n=$((n+1)); done; touch /tmp/ready; echo ready; while read line; do echo "reply $line seed=$seed"; done`}

func templateAnn(name string, ready bool) oci.SpecOpts {
	a := map[string]string{"io.containerd.warm.template": name}
	if ready {
		a["io.containerd.warm.ready"] = "file:/tmp/ready"
	}
	return oci.WithAnnotations(a)
}

// askSeed sends a line to a running echo task and returns the seed of its reply.
func askSeed(t *testing.T, w io.Writer, out *syncBuffer, line string) string {
	t.Helper()
	if _, err := w.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	var seed string
	waitForf(t, func() string { return fmt.Sprintf("reply to %s (output so far: %q)", line, tail(out.String(), 300)) }, func() bool {
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(l, "reply "+line+" seed=") {
				seed = strings.TrimPrefix(l, "reply "+line+" seed=")
				return true
			}
		}
		return false
	})
	return seed
}

// makeTemplate runs a template maker and waits until its pool holds frozen sandboxes.
func makeTemplate(t *testing.T, e *env, name string, opts ...oci.SpecOpts) (seed string) {
	t.Helper()
	c := e.container(echoApp, append([]oci.SpecOpts{templateAnn(name, true)}, opts...)...)
	r, w := io.Pipe()
	t.Cleanup(func() { w.Close() })
	var out syncBuffer
	e.start(c, streams(r, &out, io.Discard))
	seed = askSeed(t, w, &out, "maker")
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	waitFor(t, "pool of "+name+" filled", func() bool {
		st, ok, err := ctl.Pool(name)
		return err == nil && ok && st.Frozen >= 2
	})
	return seed
}

// echoTask is a started echoApp container and its stdio.
type echoTask struct {
	c    containerd.Container
	task containerd.Task
	exit <-chan containerd.ExitStatus
	in   *io.PipeWriter
	out  *syncBuffer
}

// startServed starts an echoApp container naming template name (and opts) and checks
// that it continues from the template: its reply to label carries seed.
func startServed(t *testing.T, e *env, name, seed, label string, opts ...oci.SpecOpts) *echoTask {
	t.Helper()
	c := e.container(echoApp, append([]oci.SpecOpts{templateAnn(name, false)}, opts...)...)
	r, w := io.Pipe()
	t.Cleanup(func() { w.Close() })
	x := &echoTask{c: c, in: w, out: &syncBuffer{}}
	x.task, x.exit = e.start(c, streams(r, x.out, io.Discard))
	if got := askSeed(t, w, x.out, label); got != seed {
		t.Fatalf("%s: served seed %s, the template's %s: not restored from the template", label, got, seed)
	}
	return x
}

// killAndDelete kills a task with SIGKILL, checks its exit status (137), and deletes it
// and, unless c is nil, its container.
func killAndDelete(t *testing.T, e *env, c containerd.Container, task containerd.Task, exit <-chan containerd.ExitStatus) {
	t.Helper()
	if err := task.Kill(e.ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := exitOf(t, exit); code != 137 {
		t.Fatalf("exit %d after SIGKILL, want 137", code)
	}
	if _, err := task.Delete(e.ctx); err != nil {
		t.Fatal(err)
	}
	if c != nil {
		if err := c.Delete(e.ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPoolHit makes a template by annotation and serves a container from its pool: the
// container continues from the template's state, gets only its own output, and every
// task RPC works on it.
func TestPoolHit(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "echo-" + shortName(t)
	seed := makeTemplate(t, e, name)

	c := e.container(echoApp, templateAnn(name, false))
	r, w := io.Pipe()
	defer w.Close()
	var out syncBuffer
	task, exit := e.start(c, streams(r, &out, io.Discard))
	if got := askSeed(t, w, &out, "served"); got != seed {
		t.Fatalf("served container has seed %s, the template %s: not restored from the template", got, seed)
	}
	if strings.Contains(out.String(), "ready") {
		t.Fatalf("output from before adoption leaked: %q", out.String())
	}
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	st, _, err := ctl.Pool(name)
	if err != nil || st.Hits != 1 {
		t.Fatalf("pool stats %+v, %v: want one hit", st, err)
	}
	// Refills restore at a lowered priority; the served process runs at its own (CRIU
	// restores the nice value it was dumped with).
	if n := niceOf(t, int(task.Pid())); n != 0 {
		t.Fatalf("served process runs at nice %d, want 0 (the template's)", n)
	}
	// Every task RPC on an adopted sandbox.
	spec, _ := c.Spec(e.ctx)
	ps := *spec.Process
	ps.Args = []string{"sh", "-c", "echo exec-in-adopted; exit 5"}
	if xo, code := execOutput(t, e, task, "x1", &ps); code != 5 || xo != "exec-in-adopted\n" {
		t.Fatalf("exec exit %d, output %q", code, xo)
	}
	if err := task.Pause(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := task.Resume(e.ctx); err != nil {
		t.Fatal(err)
	}
	if pids, err := task.Pids(e.ctx); err != nil || len(pids) == 0 {
		t.Fatalf("pids %v %v", pids, err)
	}
	if _, err := task.Metrics(e.ctx); err != nil {
		t.Fatalf("metrics: %v", err)
	}
	if got := askSeed(t, w, &out, "after-rpcs"); got != seed {
		t.Fatalf("seed changed: %s", got)
	}
	if err := task.Kill(e.ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := exitOf(t, exit); code != 137 {
		t.Fatalf("exit %d", code)
	}
}

// execOutput runs ps in task as exec id and returns its stdout and exit code, once the
// exec is deleted.
func execOutput(t *testing.T, e *env, task containerd.Task, id string, ps *specs.Process) (string, uint32) {
	t.Helper()
	var out syncBuffer
	p, err := task.Exec(e.ctx, id, ps, streams(nil, &out, io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	exit, err := p.Wait(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	code := exitOf(t, exit)
	if _, err := p.Delete(e.ctx); err != nil {
		t.Fatal(err)
	}
	return out.String(), code
}

// TestPoolMissesAndFallbacks: a request that differs from the template starts cold with
// the reason counted; an empty pool falls back to restoring the template's checkpoint
// into the request's container (still the template's state).
func TestPoolMissesAndFallbacks(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "miss-" + shortName(t)
	seed := makeTemplate(t, e, name)
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)

	serve := func(args []string, opts ...oci.SpecOpts) string {
		t.Helper()
		c := e.container(args, append([]oci.SpecOpts{templateAnn(name, false)}, opts...)...)
		r, w := io.Pipe()
		defer w.Close()
		var out syncBuffer
		task, exit := e.start(c, streams(r, &out, io.Discard))
		got := askSeed(t, w, &out, "q")
		_ = task.Kill(e.ctx, syscall.SIGKILL)
		exitOf(t, exit)
		return got
	}
	// Other args: cold, its own seed.
	other := append([]string(nil), echoApp...)
	other[2] = "true; " + other[2]
	if got := serve(other); got == seed {
		t.Fatal("a request with other args was served the template's state")
	}
	// Other environment.
	if got := serve(echoApp, oci.WithEnv([]string{"EXTRA=1"})); got == seed {
		t.Fatal("a request with other environment was served the template's state")
	}
	st, _, _ := ctl.Pool(name)
	if st.Misses["process args differ"] != 1 || st.Hits != 0 {
		t.Fatalf("misses %v hits %d", st.Misses, st.Hits)
	}
	found := false
	for k := range st.Misses {
		found = found || strings.HasPrefix(k, "environment differs: EXTRA")
	}
	if !found {
		t.Fatalf("misses %v: want an environment reason naming EXTRA", st.Misses)
	}
	// Drained: Create restores on create at once (no refill would come), and the pool
	// stays drained for the namespace's next pool shim (a marker in run_dir).
	if err := ctl.Do("POST", "/pools/"+name+"/drain", nil); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(cd.WarmRun, cd.Namespace, "drained", name)
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("no drained marker: %v", err)
	}
	if got := serve(echoApp); got != seed {
		t.Fatalf("restore-on-create gave seed %s, want the template's %s", got, seed)
	}
	st, _, _ = ctl.Pool(name)
	if st.Misses["pool drained (warmctl pool prewarm refills it)"] != 1 {
		t.Fatalf("misses %v", st.Misses)
	}
	// Prewarm refills it and the next request is a hit again.
	if err := ctl.Do("POST", "/pools/"+name+"/prewarm?n=2", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("drained marker left after prewarm: %v", err)
	}
	waitFor(t, "prewarmed", func() bool { s, _, _ := ctl.Pool(name); return s.Frozen >= 2 })
	if got := serve(echoApp); got != seed {
		t.Fatalf("seed %s after prewarm", got)
	}
	if st, _, _ = ctl.Pool(name); st.Hits != 1 {
		t.Fatalf("hits %d after prewarm", st.Hits)
	}
}

// TestPoolExecCPUAffinity: runc exec applies the execCPUAffinity of the container's
// runc state when the exec's own process has none. A pooled sandbox's state is the
// template's, so a request with an affinity of its own is restored on create (its
// state is then the request's) and the reason counted; an exec into it runs on the
// request's CPUs, as in a cold container.
func TestPoolExecCPUAffinity(t *testing.T) {
	need(t)
	if runtime.NumCPU() < 2 {
		testenv.Missing(t, "2 CPUs (the affinity must differ from the default)")
	}
	e := newEnv(t, harness.Warm)
	name := "aff-" + shortName(t)
	seed := makeTemplate(t, e, name)
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	waitFor(t, "a frozen sandbox", func() bool { s, _, _ := ctl.Pool(name); return s.Frozen >= 1 })

	c := e.container(echoApp, templateAnn(name, false), func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.ExecCPUAffinity = &specs.CPUAffinity{Final: "0"}
		return nil
	})
	r, w := io.Pipe()
	defer w.Close()
	var out syncBuffer
	task, exit := e.start(c, streams(r, &out, io.Discard))
	if got := askSeed(t, w, &out, "q"); got != seed {
		t.Fatalf("seed %s, want the template's %s (a restore on create)", got, seed)
	}
	spec, _ := c.Spec(e.ctx)
	ps := *spec.Process
	ps.ExecCPUAffinity = nil // as a client that builds the exec's process itself
	ps.Args = []string{"sh", "-c", "grep Cpus_allowed_list /proc/self/status"}
	xo, _ := execOutput(t, e, task, "aff", &ps)
	if got := strings.Join(strings.Fields(xo), " "); got != "Cpus_allowed_list: 0" {
		t.Errorf("exec runs with %q, want CPU 0 (the request's execCPUAffinity)", got)
	}
	st, _, _ := ctl.Pool(name)
	found := false
	for k, n := range st.Misses {
		found = found || (strings.HasPrefix(k, "exec CPU affinity differs") && n == 1)
	}
	if !found || st.Hits != 0 {
		t.Errorf("misses %v hits %d: want one miss for the exec CPU affinity", st.Misses, st.Hits)
	}
	_ = task.Kill(e.ctx, syscall.SIGKILL)
	exitOf(t, exit)
}

// oneshotApp initialises, then (restored or not) sleeps a little and prints its seed.
var oneshotApp = []string{"sh", "-c", `seed=$RANDOM$RANDOM; touch /tmp/ready; sleep 1; echo "done seed=$seed"`}

// hitRun is the ctr command line that runs app as container id, naming template name.
func hitRun(name, id string, app []string, flags ...string) []string {
	args := append(append([]string{"run"}, flags...), "--annotation", "io.containerd.warm.template="+name)
	args = append(args, cd.RuntimeFlags(harness.Warm)...)
	return append(append(args, BusyboxRef, id), app...)
}

// ctrBurst fills the pool of name to frozen sandboxes, then runs n `ctr run --rm` of app
// from it at once; check gets each run's id, output and error (from the run's
// goroutine). It returns the pool's figures from before and after the burst.
func ctrBurst(t *testing.T, e *env, ctl *harness.Ctl, name string, frozen, n int, tag string, app []string, check func(id, out string, err error)) (before, after pool.Stats) {
	t.Helper()
	if err := ctl.Do("POST", fmt.Sprintf("/pools/%s/prewarm?n=%d", name, frozen), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, fmt.Sprintf("pool of %d", frozen), func() bool { s, _, _ := ctl.Pool(name); return s.Frozen >= frozen })
	before, _, _ = ctl.Pool(name)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("%s-%s-%d", shortName(t), tag, i)
			out, err := cd.Ctr(e.ctx, nil, hitRun(name, id, app, "--rm")...)
			check(id, out, err)
		}(i)
	}
	wg.Wait()
	after, _, _ = ctl.Pool(name)
	return before, after
}

// TestPoolConcurrentCtrRun runs 10, then 50, `ctr run --rm` at once against a pool of
// 5: every one succeeds and every one gets the template's state, from a frozen sandbox
// or, once the pool is empty, by a restore on create. No sandbox is served twice.
func TestPoolConcurrentCtrRun(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "burst-" + shortName(t)
	c := e.container(oneshotApp, oci.WithAnnotations(map[string]string{
		"io.containerd.warm.template": name, "io.containerd.warm.ready": "file:/tmp/ready"}))
	var mout syncBuffer
	_, mexit := e.start(c, streams(nil, &mout, io.Discard))
	exitOf(t, mexit)
	seed := strings.TrimPrefix(strings.TrimSpace(mout.String()), "done seed=")
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	// Throughout, refills' runc and CRIU run beside the hits: they must not hold the
	// shims' listening sockets (one they keep connectable outlives its shim, and the next
	// start action joins the dead shim).
	stopWatch, heldBy := make(chan struct{}), make(chan []string, 1)
	go func() {
		defer func() { heldBy <- nil }()
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if held := harness.ShimSocketHolders(suiteDir); len(held) > 0 {
				heldBy <- held
				<-stopWatch
				return
			}
		}
	}()
	for _, n := range []int{10, 50} {
		before, after := ctrBurst(t, e, ctl, name, 5, n, strconv.Itoa(n), oneshotApp, func(id, out string, err error) {
			if err != nil || !strings.Contains(out, "done seed="+seed) {
				t.Errorf("%s: %v: %q", id, err, out)
			}
		})
		hits := after.Hits - before.Hits
		t.Logf("%d concurrent: %d hits, misses %v", n, hits, after.Misses)
		if hits < 5 {
			t.Errorf("%d concurrent runs against 5 frozen sandboxes: only %d hits", n, hits)
		}
	}
	close(stopWatch)
	if held := <-heldBy; len(held) > 0 {
		t.Fatalf("processes other than shims held shim sockets during the runs: %v", held)
	}
}

// bulkApp initialises, then (restored or not) writes 1 MiB and a last line, and exits
// at once.
var bulkApp = []string{"sh", "-c", `seed=$RANDOM$RANDOM; touch /tmp/ready; sleep 1; head -c 1048576 /dev/zero | tr '\0' x; echo; echo "end seed=$seed"`}

// makeBulkTemplate runs bulkApp as the template name and returns its seed.
func makeBulkTemplate(t *testing.T, e *env, name string) string {
	t.Helper()
	c := e.container(bulkApp, oci.WithAnnotations(map[string]string{
		"io.containerd.warm.template": name, "io.containerd.warm.ready": "file:/tmp/ready"}))
	var mout syncBuffer
	_, mexit := e.start(c, streams(nil, &mout, io.Discard))
	exitOf(t, mexit)
	_, seed, _ := strings.Cut(strings.TrimSpace(mout.String()), "end seed=")
	if seed == "" {
		t.Fatalf("template's run printed no seed: %d bytes", len(mout.String()))
	}
	return seed
}

func bulkOutput(seed string) string { return strings.Repeat("x", 1<<20) + "\nend seed=" + seed + "\n" }

// slowWriter takes a while over every write, as a client busy elsewhere would.
type slowWriter struct {
	syncBuffer
	delay time.Duration
	last  atomic.Int64 // when the last write began (its bytes were read), in Unix nanoseconds
}

func (w *slowWriter) Write(p []byte) (int, error) {
	w.last.Store(time.Now().UnixNano())
	time.Sleep(w.delay)
	return w.syncBuffer.Write(p)
}

// TestSlowReaderGetsAllOutput: a client that reads a task's output slowly and deletes
// the task as soon as Wait reports its exit, as ctr does, still gets all of it, from a
// cold container and from a pool hit. containerd's client closes its FIFO readers when
// it deletes a task, so the shim reports an exit only once the output was read out of
// its pipes and containerd's FIFOs (or nothing moved for a while: nobody reads).
// containerd's own runc shim is run the same way for comparison (logged, not asserted).
func TestSlowReaderGetsAllOutput(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "slow-" + shortName(t)
	seed := makeBulkTemplate(t, e, name)
	want := bulkOutput(seed)
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	waitFor(t, "a frozen sandbox", func() bool { s, _, _ := ctl.Pool(name); return s.Frozen >= 1 })
	// 20 ms per 32 KiB read: about 0.6 s for the whole output, so when the application
	// exits, the pipes and FIFO still hold what the client takes tens of ms to read.
	// The exit is dated when the application exited, not when the shim reported it
	// (once the output was read): before the client read its last bytes, which the
	// pipes and the FIFO held when the application exited.
	run := func(e *env, c containerd.Container) string {
		out := &slowWriter{delay: 20 * time.Millisecond}
		task, exit := e.start(c, streams(nil, out, io.Discard))
		var st containerd.ExitStatus
		select {
		case st = <-exit:
		case <-time.After(time.Minute):
			t.Fatal("task did not exit")
		}
		if _, err := task.Delete(e.ctx); err != nil {
			t.Fatal(err)
		}
		if last := time.Unix(0, out.last.Load()); e.runtime == harness.Warm && !st.ExitTime().Before(last) {
			t.Errorf("exit dated %v, not before the client's last read at %v: the report's time, not the exit's",
				st.ExitTime().Format(time.StampMicro), last.Format(time.StampMicro))
		}
		return out.String()
	}
	check := func(what, got string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %d of %d bytes, ending %q", what, len(got), len(want), got[max(0, len(got)-30):])
		}
	}
	before, _, _ := ctl.Pool(name)
	check("pool hit", run(e, e.container(bulkApp, templateAnn(name, false))))
	if after, _, _ := ctl.Pool(name); after.Hits != before.Hits+1 {
		t.Fatalf("not a pool hit: %+v", after)
	}
	// Cold: the same application without the template (its own seed).
	cold := strings.Replace(bulkApp[2], "sleep 1; ", "", 1)
	got := run(e, e.container([]string{"sh", "-c", cold}))
	if !strings.HasPrefix(got, strings.Repeat("x", 1<<20)+"\nend seed=") || len(got) < len(want)-10 {
		t.Errorf("cold: got %d bytes, ending %q", len(got), got[max(0, len(got)-30):])
	}
	re := newEnv(t, harness.Runc)
	got = run(re, re.container([]string{"sh", "-c", cold}))
	t.Logf("containerd's runc shim, same client: %d of about %d bytes", len(got), len(want))
}

// TestPoolHitOutputUnread: a pool hit whose output nobody reads (`ctr run -d`: ctr
// leaves at once) fills its pipes and blocks, and is then killed and deleted like any
// container: the exit is reported though the output stays unread, and the Delete does not
// hang on the shim's copies stuck on full pipes.
func TestPoolHitOutputUnread(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "unread-" + shortName(t)
	makeBulkTemplate(t, e, name)
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	waitFor(t, "a frozen sandbox", func() bool { s, _, _ := ctl.Pool(name); return s.Frozen >= 1 })
	before, _, _ := ctl.Pool(name)
	id := shortName(t)
	if out, err := cd.Ctr(e.ctx, nil, hitRun(name, id, bulkApp, "-d")...); err != nil {
		t.Fatalf("ctr run -d: %v\n%s", err, out)
	}
	c, err := e.client.LoadContainer(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.WithoutCancel(e.ctx), containerd.WithSnapshotCleanup) })
	if after, _, _ := ctl.Pool(name); after.Hits != before.Hits+1 {
		t.Fatalf("not a pool hit: %+v", after)
	}
	task, err := c.Task(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The application (sh, head or tr) blocks writing into a full pipe.
	waitFor(t, "the application blocked on its output", func() bool {
		procs, err := task.Pids(e.ctx)
		if err != nil {
			return false
		}
		for _, p := range procs {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", p.Pid)); strings.Contains(string(b), "pipe_write") {
				return true
			}
		}
		return false
	})
	exit, err := task.Wait(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(e.ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := exitOf(t, exit); code != 137 {
		t.Fatalf("exit %d, want 137", code)
	}
	ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete of a hit whose output nobody read: %v", err)
	}
}

// TestPoolHitOutputComplete: `ctr run` of pool hits whose application writes 1 MiB and
// exits prints all of it. A hit's output makes one hop more than a cold container's (the
// sandbox's pipe, then the container's), containerd's client drops what it has not read
// when it deletes a task, and ctr deletes it as soon as Wait reports the exit: the shim
// must report the exit only once the output has left its pipes.
func TestPoolHitOutputComplete(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "bulk-" + shortName(t)
	seed := makeBulkTemplate(t, e, name)
	want := bulkOutput(seed)
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	const runs = 5
	for round := 0; round < 4; round++ {
		before, after := ctrBurst(t, e, ctl, name, runs, runs, strconv.Itoa(round), bulkApp, func(id, out string, err error) {
			if err != nil || out != want {
				tail := out[max(0, len(out)-40):]
				t.Errorf("%s: %v: got %d bytes ending %q, want %d ending with the seed %s", id, err, len(out), tail, len(want), seed)
			}
		})
		if hits := after.Hits - before.Hits; hits != runs {
			t.Fatalf("round %d: %d of %d runs were pool hits (misses %v)", round, hits, runs, after.Misses)
		}
	}
}

// TestPoolFromCheckpointImage makes a template from a containerd checkpoint image (what
// `ctr c checkpoint --task` makes, an OCI image that can be pushed and pulled), named in
// the config as [pools.NAME] image, and serves a container from it.
func TestPoolFromCheckpointImage(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	c := e.container(echoApp)
	r, w := io.Pipe()
	defer w.Close()
	var out syncBuffer
	e.start(c, streams(r, &out, io.Discard))
	seed := askSeed(t, w, &out, "orig")
	name := "img-" + shortName(t)
	ref := "warmtest/checkpoint:" + name
	if out, err := cd.Ctr(e.ctx, nil, "container", "checkpoint", "--task", c.ID(), ref); err != nil {
		t.Fatalf("ctr c checkpoint: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = cd.Ctr(context.Background(), nil, "image", "rm", "--sync", ref) })
	base, err := os.ReadFile(cd.WarmCfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(tempDir(t), "warm.toml")
	if err := os.WriteFile(cfg, append(base, []byte(fmt.Sprintf("\n[pools.%s]\nimage = %q\n", name, ref))...), 0o600); err != nil {
		t.Fatal(err)
	}
	e.warmCfg = cfg
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	serve := func() string {
		c := e.container(echoApp, templateAnn(name, false))
		r, w := io.Pipe()
		defer w.Close()
		var out syncBuffer
		task, exit := e.start(c, streams(r, &out, io.Discard))
		got := askSeed(t, w, &out, "q")
		_ = task.Kill(e.ctx, syscall.SIGKILL)
		exitOf(t, exit)
		return got
	}
	// The first Create with this config starts the import (and runs cold meanwhile).
	serve()
	waitFor(t, "pool from the checkpoint image", func() bool { s, ok, _ := ctl.Pool(name); return ok && s.Frozen >= 1 })
	// containerd's checkpoint recorded CRIU's default network lock; the template's copy
	// records warm's (skip), which its restores use.
	st, err := store.New(filepath.Join(cd.WarmState, "templates"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := st.Get(cd.Namespace, name)
	if err != nil {
		t.Fatal(err)
	}
	if lock, err := store.NetworkLock(tmpl.Images); err != nil || lock != "skip" {
		t.Fatalf("the template's images record network lock %q (%v), want skip", lock, err)
	}
	if got := serve(); got != seed {
		t.Fatalf("served seed %s, checkpointed %s", got, seed)
	}
	if s, _, _ := ctl.Pool(name); s.Hits != 1 {
		t.Fatalf("not a pool hit: %+v", s)
	}
}

// TestWarmctl drives a pool with the warmctl command: list, a template in use cannot be
// removed, one that is not can.
func TestWarmctl(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "ctl-" + shortName(t)
	makeTemplate(t, e, name)
	warmctl := func(args ...string) (string, error) {
		cmd := exec.Command(cd.Env.Warmctl, append([]string{"--run-dir", cd.WarmRun, "-n", cd.Namespace}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := warmctl("pool", "ls")
	if err != nil || !strings.Contains(out, name) || !strings.Contains(out, "FROZEN") || !strings.Contains(out, "HIT P99") || !strings.Contains(out, "MERGED") {
		t.Fatalf("pool ls: %v\n%s", err, out)
	}
	if out, err := warmctl("template", "ls"); err != nil || !strings.Contains(out, name) || !strings.Contains(out, "annotation") {
		t.Fatalf("template ls: %v\n%s", err, out)
	}
	c := e.container(echoApp, templateAnn(name, false))
	r, w := io.Pipe()
	defer w.Close()
	var sout syncBuffer
	task, exit := e.start(c, streams(r, &sout, io.Discard))
	askSeed(t, w, &sout, "q")
	if out, err := warmctl("template", "rm", name); err == nil || !strings.Contains(out, "in use") {
		t.Fatalf("removing a template in use: %v\n%s", err, out)
	}
	_ = task.Kill(e.ctx, syscall.SIGKILL)
	exitOf(t, exit)
	if _, err := task.Delete(e.ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := warmctl("template", "rm", name); err != nil {
		t.Fatalf("template rm: %v\n%s", err, out)
	}
	if out, _ := warmctl("pool", "ls"); strings.Contains(out, name) {
		t.Fatalf("pool of a removed template still listed:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(cd.WarmState, "templates", cd.Namespace, name)); !os.IsNotExist(err) {
		t.Fatalf("template directory left: %v", err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestTemplateReadyRules makes templates with the stdout and delay readiness rules (the
// file rule is used everywhere else) and serves a container from each.
func TestTemplateReadyRules(t *testing.T) {
	need(t)
	for _, rule := range []string{"stdout:ready", "delay:500ms"} {
		t.Run(strings.SplitN(rule, ":", 2)[0], func(t *testing.T) {
			e := newEnv(t, harness.Warm)
			name := "rule-" + shortName(t)
			c := e.container(echoApp, oci.WithAnnotations(map[string]string{
				"io.containerd.warm.template": name, "io.containerd.warm.ready": rule}))
			r, w := io.Pipe()
			defer w.Close()
			var out syncBuffer
			task, _ := e.start(c, streams(r, &out, io.Discard))
			// The maker's own output still reaches its client through the tee.
			seed := askSeed(t, w, &out, "maker")
			// Its state names containerd's FIFOs, not the tee's, which a client would
			// reattach to.
			got, err := e.client.TaskService().Get(e.ctx, &tasks.GetRequest{ContainerID: c.ID()})
			if err != nil {
				t.Fatal(err)
			}
			if cfg := task.IO().Config(); got.Process.Stdout != cfg.Stdout || got.Process.Stdin != cfg.Stdin {
				t.Fatalf("state stdio %q %q, want the client's %q %q", got.Process.Stdin, got.Process.Stdout, cfg.Stdin, cfg.Stdout)
			}
			ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
			waitFor(t, "pool filled", func() bool { s, ok, _ := ctl.Pool(name); return ok && s.Frozen >= 1 })
			c2 := e.container(echoApp, templateAnn(name, false))
			r2, w2 := io.Pipe()
			defer w2.Close()
			var out2 syncBuffer
			task2, exit2 := e.start(c2, streams(r2, &out2, io.Discard))
			if got := askSeed(t, w2, &out2, "served"); got != seed {
				t.Fatalf("served seed %s, template %s", got, seed)
			}
			_ = task2.Kill(e.ctx, syscall.SIGKILL)
			exitOf(t, exit2)
		})
	}
}

// TestBadTemplateAnnotation: a malformed readiness rule fails the Create with a message
// that names the annotation and what is allowed; nothing is left (checked at teardown).
func TestBadTemplateAnnotation(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	c := e.container(echoApp, oci.WithAnnotations(map[string]string{
		"io.containerd.warm.template": "bad-" + shortName(t), "io.containerd.warm.ready": "when-ready"}))
	_, err := c.NewTask(e.ctx, nullIO())
	if err == nil || !strings.Contains(err.Error(), "io.containerd.warm.ready") || !strings.Contains(err.Error(), "file:/path") {
		t.Fatalf("got %v", err)
	}
}

// niceOf reads a process's nice value.
func niceOf(t *testing.T, pid int) int {
	t.Helper()
	st, err := procfs.ReadStat(pid)
	if err != nil {
		t.Fatalf("nice of %d: %v", pid, err)
	}
	return st.Nice
}

// TestPoolBootStart: after the pool shim is gone (a reboot, or warmctl shutdown),
// `warmctl start` brings the namespace's pools back before any container names a
// template, and containerd's next template container is a hit served by that shim.
func TestPoolBootStart(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "boot-" + shortName(t)
	seed := makeTemplate(t, e, name)
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	stopPoolShim(t, e)
	// A lease of a template deleted while no pool shim ran (warmctl template rm without
	// one): the next pool shim removes it.
	ghost, err := e.client.LeasesService().Create(e.ctx, leases.WithID("warm-template-ghost-"+name+"-g1"),
		leases.WithLabels(map[string]string{"io.containerd.warm.template-snapshot": "ghost-" + name}))
	if err != nil {
		t.Fatal(err)
	}

	poolShims := func() []harness.ShimProcess {
		var out []harness.ShimProcess
		for _, sp := range harness.ShimProcesses(suiteDir) {
			if strings.Contains(strings.Join(sp.Args, " "), "-id warm-pool") {
				out = append(out, sp)
			}
		}
		return out
	}
	// Under nohup (SIGHUP ignored, as the shim inherits it): the shim must not pass an
	// ignored SIGHUP on to the containers it starts.
	cmd := exec.Command("nohup", cd.Env.Warmctl, "-n", cd.Namespace, "start", "--address", cd.Address,
		"--socket-dir", filepath.Join(suiteDir, "s"), "--config", cd.WarmCfg, "--shim", cd.Env.Shim, "--wait", "1m")
	out, err := cmd.CombinedOutput()
	if err != nil {
		// What the started shim said: its start action's log (the boot bundle's) and the
		// pool shim's own.
		// The shim processes, where they are stuck, and a goroutine dump of the pool
		// shim's (SIGQUIT; it lands in boot/stderr).
		var procs strings.Builder
		for _, sp := range harness.ShimProcesses(suiteDir) {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", sp.Pid))
			wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", sp.Pid))
			kstack, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stack", sp.Pid))
			fmt.Fprintf(&procs, "%d %v\n  stat %s\n  wchan %s\n  %s\n", sp.Pid, sp.Args, strings.TrimSpace(string(st)), wchan, strings.ReplaceAll(string(kstack), "\n", "\n  "))
			if strings.Contains(strings.Join(sp.Args, " "), "-id warm-pool") {
				_ = syscall.Kill(sp.Pid, syscall.SIGQUIT)
			}
		}
		time.Sleep(time.Second)
		boot, _ := os.ReadFile(filepath.Join(cd.WarmRun, cd.Namespace, "boot", "log"))
		stderr, _ := os.ReadFile(filepath.Join(cd.WarmRun, cd.Namespace, "boot", "stderr"))
		shimLog, _ := os.ReadFile(filepath.Join(cd.WarmRun, cd.Namespace, "pool-shim.log"))
		t.Fatalf("warmctl start: %v\n%s\n--- shim processes:\n%s\n--- boot/log:\n%s\n--- boot/stderr:\n%s\n--- pool-shim.log (end):\n%s",
			err, out, procs.String(), boot, tail(string(stderr), 12000), tail(string(shimLog), 3000))
	}
	st, ok, err := ctl.Pool(name)
	if err != nil || !ok || st.Frozen < 2 || st.Hits != 0 {
		t.Fatalf("after warmctl start, before any container: pool %+v (%v, %v)\n%s", st, ok, err, out)
	}
	booted := poolShims()
	if len(booted) != 1 {
		t.Fatalf("%d pool shims after warmctl start: %v", len(booted), booted)
	}
	if sig, err := procfs.ReadSignals(booted[0].Pid); err != nil || procfs.Has(sig.Ignored, int(syscall.SIGHUP)) {
		t.Errorf("the pool shim started under nohup ignores SIGHUP (signal state %+v, %v): runc and the containers it starts inherit that", sig, err)
	}
	leaseIDs := func() map[string]bool {
		ls, err := e.client.LeasesService().List(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, l := range ls {
			ids[l.ID] = true
		}
		return ids
	}
	waitFor(t, "the deleted template's lease removed, the template's own kept", func() bool {
		ids := leaseIDs()
		own := false
		for id := range ids {
			own = own || strings.HasPrefix(id, "warm-template-"+name+"-g")
		}
		return !ids[ghost.ID] && own
	})
	// A second start finds it running.
	if out, err := exec.Command(cd.Env.Warmctl, "-n", cd.Namespace, "start", "--address", cd.Address,
		"--socket-dir", filepath.Join(suiteDir, "s"), "--config", cd.WarmCfg, "--shim", cd.Env.Shim).CombinedOutput(); err != nil || !strings.Contains(string(out), "already running") {
		t.Fatalf("second warmctl start: %v\n%s", err, out)
	}

	c := e.container(echoApp, templateAnn(name, false))
	r, w := io.Pipe()
	defer w.Close()
	var sout syncBuffer
	task, exit := e.start(c, streams(r, &sout, io.Discard))
	if got := askSeed(t, w, &sout, "after-boot"); got != seed {
		t.Fatalf("served seed %s, template's %s", got, seed)
	}
	if st, _, _ := ctl.Pool(name); st.Hits != 1 {
		t.Fatalf("first container after boot was not a hit: %+v", st)
	}
	if now := poolShims(); len(now) != 1 || now[0].Pid != booted[0].Pid {
		t.Fatalf("the container went to another shim than the one warmctl started: %v, then %v", booted, now)
	}
	if _, err := os.Stat(filepath.Join(cd.WarmRun, cd.Namespace, "pool-shim.log")); err != nil {
		t.Fatalf("pool shim log: %v", err)
	}
	_ = task.Kill(e.ctx, syscall.SIGKILL)
	exitOf(t, exit)
}

// stopPoolShim ends every container of the test's pool shim and shuts the shim down,
// waiting until it is gone; templates stay in the store.
func stopPoolShim(t *testing.T, e *env) {
	t.Helper()
	containers, _ := e.client.Containers(e.ctx)
	for _, c := range containers {
		if task, err := c.Task(e.ctx, nil); err == nil {
			_, _ = task.Delete(e.ctx, containerd.WithProcessKill)
		}
	}
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	if err := ctl.Do("POST", "/shutdown", nil); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	waitFor(t, "pool shim gone", func() bool {
		for _, sp := range harness.ShimProcesses(suiteDir) {
			if strings.Contains(strings.Join(sp.Args, " "), "warm") {
				return false
			}
		}
		return true
	})
}

// TestGroupShimRestoresTemplate: a container that names a template but belongs to
// another shim (a group's, as a pod's containers belong to their sandbox's) is served in
// that shim by restoring the template's checkpoint. That shim starts no pool and leaves
// the pool shim's frozen sandboxes alone (it used to sweep them as its own leftovers).
func TestGroupShimRestoresTemplate(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "grp-" + shortName(t)
	seed := makeTemplate(t, e, name)
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	before, _, err := ctl.Pool(name)
	if err != nil {
		t.Fatal(err)
	}
	sandboxes := func() map[string]bool {
		out, err := exec.Command(cd.Env.Runc, "--root", filepath.Join(cd.RuncRoot, cd.Namespace), "list", "-q").Output()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, id := range strings.Fields(string(out)) {
			if strings.Contains(id, name) || strings.HasPrefix(id, "warm-") {
				m[id] = true
			}
		}
		return m
	}
	frozen := sandboxes()

	c := e.container(echoApp, oci.WithAnnotations(map[string]string{
		"io.containerd.warm.template": name, "io.containerd.warm.group": "g-" + shortName(t)}))
	r, w := io.Pipe()
	defer w.Close()
	var out syncBuffer
	task, exit := e.start(c, streams(r, &out, io.Discard))
	if got := askSeed(t, w, &out, "grouped"); got != seed {
		t.Fatalf("grouped container has seed %s, the template %s: not restored from the template", got, seed)
	}
	if shim, pool := parentPid(t, task.Pid()), poolShimPid(t); shim == pool {
		t.Fatalf("grouped container runs in the pool shim (%d)", pool)
	}
	after, _, err := ctl.Pool(name)
	if err != nil {
		t.Fatal(err)
	}
	if after.Hits != before.Hits || after.Destroyed != before.Destroyed {
		t.Fatalf("pool changed: before %+v, after %+v", before, after)
	}
	for id := range frozen {
		if !sandboxes()[id] {
			t.Fatalf("frozen sandbox %s of the pool shim disappeared when the group shim started", id)
		}
	}
	if err := task.Kill(e.ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exitOf(t, exit)
}

// poolShimPid is the pid of the process serving the namespace's control socket.
func poolShimPid(t testing.TB) int {
	t.Helper()
	conn, err := net.Dial("unix", filepath.Join(cd.WarmRun, cd.Namespace, "ctl.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	return int(cred.Pid)
}

// TestGroupShimTemplateReachesPool: a new generation of a template made in another shim
// (a group's, as in a pod) reaches the pool shim's pool through the control socket; the
// pool rolls over to it without a Create having to read the store.
func TestGroupShimTemplateReachesPool(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "grpmk-" + shortName(t)
	makeTemplate(t, e, name)
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	before, _, err := ctl.Pool(name)
	if err != nil {
		t.Fatal(err)
	}
	c := e.container(echoApp, oci.WithAnnotations(map[string]string{
		"io.containerd.warm.template": name, "io.containerd.warm.ready": "file:/tmp/ready",
		"io.containerd.warm.group": "g-" + shortName(t)}))
	r, w := io.Pipe()
	defer w.Close()
	var out syncBuffer
	e.start(c, streams(r, &out, io.Discard))
	waitFor(t, "the pool on the group shim's generation", func() bool {
		st, _, err := ctl.Pool(name)
		return err == nil && st.Generation > before.Generation
	})
}

// TestPoolHitResources: a hit runs in the cgroup it asked for, with the limits it asked
// for and no others: a template made under limits does not pass them on (on cgroup v1 a
// hit renames the sandbox's cgroup, so the sandbox must be restored without them), and
// a hit that asks for limits gets them (on cgroup v2 the namespace's cgroup must delegate
// the controllers, which the move sets up as runc does).
func TestPoolHitResources(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "res-" + shortName(t)
	seed := makeTemplate(t, e, name, oci.WithMemoryLimit(200<<20), oci.WithPidsLimit(70))
	serve := func(label string, opts ...oci.SpecOpts) (dir, mem, pids string) {
		t.Helper()
		c := e.container(echoApp, append([]oci.SpecOpts{templateAnn(name, false)}, opts...)...)
		r, w := io.Pipe()
		defer w.Close()
		var out syncBuffer
		task, exit := e.start(c, streams(r, &out, io.Discard))
		if got := askSeed(t, w, &out, label); got != seed {
			t.Fatalf("%s: served seed %s, template's %s: not a hit", label, got, seed)
		}
		// runc's record of the container's cgroup is what runc's create of the same
		// request records (runc update starts from it).
		cold := e.container(echoApp, opts...)
		cr, cw := io.Pipe() // the application runs until its stdin closes
		defer cw.Close()
		coldTask, coldExit := e.start(cold, streams(cr, io.Discard, io.Discard))
		if got, want := runcCgroupConfig(t, c.ID()), runcCgroupConfig(t, cold.ID()); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: runc's state of the served container records cgroup config\n%v\nwhere a cold start records\n%v", label, got, want)
		}
		killAndDelete(t, e, cold, coldTask, coldExit)
		dir, mem, pids = cgroupLimits(t, int(task.Pid()))
		if want := "/" + cd.Namespace + "/" + c.ID(); !strings.HasSuffix(dir, want) {
			t.Errorf("%s: served process in cgroup %s, want %s", label, dir, want)
		}
		killAndDelete(t, e, c, task, exit)
		return dir, mem, pids
	}
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	if _, mem, pids := serve("limited", oci.WithMemoryLimit(96<<20), oci.WithPidsLimit(50), oci.WithCPUShares(512), oci.WithCPUCFS(20000, 100000)); mem != strconv.Itoa(96<<20) || pids != "50" {
		t.Errorf("asked for memory %d and pids 50, got %s and %s", 96<<20, mem, pids)
	}
	if _, mem, pids := serve("unlimited"); !unlimited(mem) || pids != "max" {
		t.Errorf("asked for no limits, got memory %s and pids %s (the template's are %d and 70)", mem, pids, 200<<20)
	}
	if st, _, _ := ctl.Pool(name); st.Hits != 2 {
		t.Fatalf("want 2 hits: %+v", st)
	}
}

// TestPoolHitUpdateAndCheckpoint: a served container's resources can be updated (runc
// update acts on the cgroup it was moved to), and it can be checkpointed and restored
// into a new task that carries on from its state, as a cold container can.
func TestPoolHitUpdateAndCheckpoint(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "upd-" + shortName(t)
	seed := makeTemplate(t, e, name)
	x := startServed(t, e, name, seed, "served", oci.WithMemoryLimit(96<<20), oci.WithPidsLimit(50), oci.WithCPUCFS(20000, 100000))
	c, task, w, out := x.c, x.task, x.in, x.out
	if st, _, _ := harness.NewCtl(cd.WarmRun, cd.Namespace).Pool(name); st.Hits != 1 {
		t.Fatalf("want one hit: %+v", st)
	}
	// A memory update, then a pids update that names no memory (as ctr task update
	// sends): the first limit stays.
	if err := task.Update(e.ctx, containerd.WithResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(128 << 20))}})); err != nil {
		t.Fatalf("update memory: %v", err)
	}
	if err := task.Update(e.ctx, containerd.WithResources(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr(int64(40))}})); err != nil {
		t.Fatalf("update pids: %v", err)
	}
	if _, mem, pids := cgroupLimits(t, int(task.Pid())); mem != strconv.Itoa(128<<20) || pids != "40" {
		t.Fatalf("after updates to memory %d and pids 40, the cgroup has %s and %s", 128<<20, mem, pids)
	}
	// A period alone: runc keeps the quota it recorded at create (runc's state of the
	// served container must have the request's; on cgroup v2, where runc writes both
	// into cpu.max, the sandbox's record of none dropped the quota).
	if err := task.Update(e.ctx, containerd.WithResources(&specs.LinuxResources{CPU: &specs.LinuxCPU{Period: new(uint64(50000))}})); err != nil {
		t.Fatalf("update cpu period: %v", err)
	}
	if got := cgroupCPUMax(t, int(task.Pid())); got != "20000 50000" {
		t.Fatalf("after a quota of 20000 at create and an update of the period alone to 50000, the cgroup has cpu quota and period %q", got)
	}
	if got := askSeed(t, w, out, "updated"); got != seed {
		t.Fatalf("seed changed after update: %s", got)
	}
	ckpt, err := task.Checkpoint(e.ctx)
	if err != nil {
		t.Fatalf("checkpoint of a served container: %v", err)
	}
	t.Cleanup(func() {
		_ = e.client.ImageService().Delete(context.WithoutCancel(e.ctx), ckpt.Name(), imagesSync())
	})
	// The checkpoint leaves it running.
	if got := askSeed(t, w, out, "checkpointed"); got != seed {
		t.Fatalf("seed changed after checkpoint: %s", got)
	}
	killAndDelete(t, e, nil, task, x.exit)
	r2, w2 := io.Pipe()
	defer w2.Close()
	var out2 syncBuffer
	task2, exit2 := e.start(c, streams(r2, &out2, io.Discard), containerd.WithTaskCheckpoint(ckpt))
	if got := askSeed(t, w2, &out2, "restored"); got != seed {
		t.Fatalf("restored from the served container's checkpoint with seed %s, want %s", got, seed)
	}
	// Restored from its own checkpoint, not served again from the pool (which has the
	// same seed).
	if st, _, _ := harness.NewCtl(cd.WarmRun, cd.Namespace).Pool(name); st.Hits != 1 || st.Misses["the Create restores a checkpoint of its own"] != 1 {
		t.Fatalf("want the restore counted as a miss, not a hit: %+v", st)
	}
	killAndDelete(t, e, nil, task2, exit2)
}

// TestPoolHitNeverStarted: a served container that was created and never started is
// killed and deleted as a cold one is (Delete with a kill, as CRI's RemoveContainer does;
// a SIGKILL or a SIGTERM its application does not handle, then Delete), and a signal
// runc init ignores leaves it to start normally; a sandbox is never used again.
func TestPoolHitNeverStarted(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "unstarted-" + shortName(t)
	seed := makeTemplate(t, e, name)
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	n := 0
	create := func(stdin io.Reader, out io.Writer) containerd.Task {
		t.Helper()
		c := e.container(echoApp, templateAnn(name, false))
		task, err := c.NewTask(e.ctx, streams(stdin, out, io.Discard))
		if err != nil {
			t.Fatal(err)
		}
		if st, err := task.Status(e.ctx); err != nil || st.Status != containerd.Created {
			t.Fatalf("status %+v, %v: want created", st, err)
		}
		n++
		if st, _, _ := ctl.Pool(name); st.Hits != n {
			t.Fatalf("not a hit: %+v", st)
		}
		return task
	}
	task := create(nil, io.Discard)
	if _, err := task.Delete(e.ctx, containerd.WithProcessKill); err != nil {
		t.Fatalf("delete of a created, never started hit: %v", err)
	}
	// Killed, then deleted, with the exit status a cold container killed before its
	// Start reports (runc init's: 137 for SIGKILL, 2 for the others its Go runtime dies
	// of). echoApp's shell, its PID namespace's init, would ignore a SIGTERM: runc init,
	// a cold container's process until Start, does not.
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM, syscall.SIGQUIT} {
		killed := func(task containerd.Task) uint32 {
			t.Helper()
			exit, err := task.Wait(e.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := task.Kill(e.ctx, sig); err != nil {
				t.Fatalf("kill (%v) of a created, never started container: %v", sig, err)
			}
			code := exitOf(t, exit)
			if _, err := task.Delete(e.ctx); err != nil {
				t.Fatal(err)
			}
			return code
		}
		coldTask, err := e.container(echoApp).NewTask(e.ctx, streams(nil, io.Discard, io.Discard))
		if err != nil {
			t.Fatal(err)
		}
		want := killed(coldTask)
		if got := killed(create(nil, io.Discard)); got != want {
			t.Fatalf("a hit killed (%v) before its Start exited %d, a cold container %d", sig, got, want)
		}
	}
	// A signal runc init ignores: the container starts afterwards, from the template.
	r, w := io.Pipe()
	defer w.Close()
	var out syncBuffer
	task = create(r, &out)
	exit, err := task.Wait(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(e.ctx, syscall.SIGWINCH); err != nil {
		t.Fatalf("SIGWINCH to a created, never started hit: %v", err)
	}
	if st, err := task.Status(e.ctx); err != nil || st.Status != containerd.Created {
		t.Fatalf("status %+v, %v after SIGWINCH: want created", st, err)
	}
	// An exec before Start is refused with a reason (a cold container would take it),
	// and leaves the container to start normally.
	pspec := &specs.Process{Args: []string{"true"}, Cwd: "/"}
	proc, err := task.Exec(e.ctx, "early", pspec, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Start(e.ctx); !errdefs.IsFailedPrecondition(err) || !strings.Contains(fmt.Sprint(err), "served from a warm pool and is not started") {
		t.Fatalf("exec into a created, never started hit: %v, want a failed precondition that says why", err)
	}
	if _, err := proc.Delete(e.ctx); err != nil {
		t.Fatalf("delete of the refused exec: %v", err)
	}
	if err := task.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := askSeed(t, w, &out, "started"); got != seed {
		t.Fatalf("seed %s after a SIGWINCH before Start, template's %s", got, seed)
	}
	_ = task.Kill(e.ctx, syscall.SIGKILL)
	exitOf(t, exit)
	if _, err := task.Delete(e.ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "no sandbox in use", func() bool { st, _, _ := ctl.Pool(name); return st.InUse == 0 })
}

// TestPoolHitAcrossContainerdRestart: containerd restarts while a served container runs;
// it finds the container running in the pool shim afterwards, can still talk to it and
// stop it, and the pool serves the next container.
func TestPoolHitAcrossContainerdRestart(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "restart-" + shortName(t)
	seed := makeTemplate(t, e, name)
	x := startServed(t, e, name, seed, "before")
	c, pid := x.c, x.task.Pid()
	if err := cd.Restart(); err != nil {
		t.Fatal(err)
	}
	client, err := cd.Client()
	if err != nil {
		t.Fatal(err)
	}
	// Closed after the cleanups of the containers made with it below.
	t.Cleanup(func() { client.Close() })
	e.client = client
	// A template made at once: the pool shim reaches the restarted containerd for its
	// image snapshot (a template made while its connection waited to be made again
	// could never be pooled), and its pool fills.
	makeTemplate(t, e, name+"-2")
	c2, err := client.LoadContainer(e.ctx, c.ID())
	if err != nil {
		t.Fatal(err)
	}
	t2, err := c2.Task(e.ctx, nil)
	if err != nil {
		t.Fatalf("task after restart: %v", err)
	}
	if st, err := t2.Status(e.ctx); err != nil || st.Status != containerd.Running || t2.Pid() != pid {
		t.Fatalf("after restart: status %v pid %d (was %d) err %v", st.Status, t2.Pid(), pid, err)
	}
	// The process still answers through the FIFOs the first client holds.
	if got := askSeed(t, x.in, x.out, "after"); got != seed {
		t.Fatalf("seed after restart %s", got)
	}
	exit, err := t2.Wait(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	killAndDelete(t, e, nil, t2, exit)
	// The pool shim kept its pool: the next container is a hit too.
	next := startServed(t, e, name, seed, "next")
	if st, _, _ := harness.NewCtl(cd.WarmRun, cd.Namespace).Pool(name); st.Hits != 2 {
		t.Fatalf("want 2 hits: %+v", st)
	}
	killAndDelete(t, e, nil, next.task, next.exit)
}

// unlimited reports whether a memory limit read from cgroupfs is "no limit" (v2 "max",
// v1 the page-rounded maximum).
func unlimited(mem string) bool {
	if mem == "max" {
		return true
	}
	n, err := strconv.ParseInt(mem, 10, 64)
	return err == nil && n >= 1<<62
}

// runcCgroupConfig is config.cgroups of runc's state of container id, but its path, as
// JSON texts by key.
func runcCgroupConfig(t *testing.T, id string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(cd.RuncRoot, cd.Namespace, id, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Config struct {
			Cgroups map[string]json.RawMessage `json:"cgroups"`
		} `json:"config"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range st.Config.Cgroups {
		if k != "path" {
			out[k] = string(v)
		}
	}
	return out
}

// cgroupLimits reads a process's cgroup (the v2 path, or the memory hierarchy's on v1)
// and its memory and pids limits.
func cgroupLimits(t *testing.T, pid int) (dir, mem, pids string) {
	t.Helper()
	for _, f := range procCgroups(t, pid) {
		switch {
		case cgroupV2() && f[1] == "":
			d := filepath.Join("/sys/fs/cgroup", f[2])
			return f[2], readTrimmed(t, filepath.Join(d, "memory.max")), readTrimmed(t, filepath.Join(d, "pids.max"))
		case !cgroupV2() && f[1] == "memory":
			dir = f[2]
			mem = readTrimmed(t, filepath.Join("/sys/fs/cgroup/memory", f[2], "memory.limit_in_bytes"))
		case !cgroupV2() && f[1] == "pids":
			pids = readTrimmed(t, filepath.Join("/sys/fs/cgroup/pids", f[2], "pids.max"))
		}
	}
	return dir, mem, pids
}

// cgroupCPUMax is the CFS quota and period of process pid's cgroup ("max" for no quota),
// as cgroup v2's cpu.max says them.
func cgroupCPUMax(t *testing.T, pid int) string {
	t.Helper()
	for _, f := range procCgroups(t, pid) {
		if cgroupV2() && f[1] == "" {
			return readTrimmed(t, filepath.Join("/sys/fs/cgroup", f[2], "cpu.max"))
		}
		if slices.Contains(strings.Split(f[1], ","), "cpu") {
			d := filepath.Join("/sys/fs/cgroup", f[1], f[2])
			if _, err := os.Stat(d); err != nil {
				d = filepath.Join("/sys/fs/cgroup/cpu", f[2])
			}
			quota := readTrimmed(t, filepath.Join(d, "cpu.cfs_quota_us"))
			if quota == "-1" {
				quota = "max"
			}
			return quota + " " + readTrimmed(t, filepath.Join(d, "cpu.cfs_period_us"))
		}
	}
	t.Fatalf("no cpu cgroup for %d", pid)
	return ""
}

// procCgroups is /proc/PID/cgroup, each line split into hierarchy id, controllers and path.
func procCgroups(t *testing.T, pid int) [][]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if f := strings.SplitN(line, ":", 3); len(f) == 3 {
			out = append(out, f)
		}
	}
	return out
}

// cgroupV2 reports whether /sys/fs/cgroup is a cgroup v2 hierarchy.
func cgroupV2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

// readTrimmed is the content of path without surrounding white space.
func readTrimmed(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return strings.TrimSpace(string(b))
}

// TestPoolRefillPausedDuringHit: a refill's restore in progress is frozen while a hit is
// being served and thawed after (refill_pause, on in this suite), and the sandbox it
// restores serves containers with the template's state. The hit is created and not yet
// started, so the pause comes and goes on its 50 ms bounds while the test watches the
// restore's freezer.
func TestPoolRefillPausedDuringHit(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	// The template is dumped with CRIU's iptables network lock, and its refills restore
	// with it too (CRIU takes the method from the images): the unlock adds about 50 ms
	// at the end of each restore, which the second hit's Create falls in. With the lock
	// skipped, a restore of echoApp can end before that Create reaches the pool.
	base, err := os.ReadFile(cd.WarmCfg)
	if err != nil {
		t.Fatal(err)
	}
	e.warmCfg = filepath.Join(tempDir(t), "warm.toml")
	if err := os.WriteFile(e.warmCfg, append([]byte("criu_network_lock = \"iptables\"\n"), base...), 0o600); err != nil {
		t.Fatal(err)
	}
	name := "gate-" + shortName(t)
	seed := makeTemplate(t, e, name)
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	pauses0, _, err := ctl.RefillPauses()
	if err != nil {
		t.Fatal(err)
	}
	// Sandboxes wait beside the template's container, under the namespace's cgroup.
	glob := filepath.Join("/sys/fs/cgroup/freezer", cd.Namespace, "warm-"+cd.Namespace+"-"+name+"-*", "freezer.state")
	frozenValue, thawedValue := "FROZEN", "THAWED"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		glob = filepath.Join("/sys/fs/cgroup", cd.Namespace, "warm-"+cd.Namespace+"-"+name+"-*", "cgroup.freeze")
		frozenValue, thawedValue = "1", "0"
	}
	existing := map[string]bool{}
	matches, _ := filepath.Glob(glob)
	for _, m := range matches {
		existing[m] = true
	}
	// A first hit takes a sandbox: its refill starts once it started.
	first := e.container(echoApp, templateAnn(name, false))
	r1, w1 := io.Pipe()
	defer w1.Close()
	var out1 syncBuffer
	task1, exit1 := e.start(first, streams(r1, &out1, io.Discard))
	if got := askSeed(t, w1, &out1, "first"); got != seed {
		t.Fatalf("first hit has seed %s, the template %s", got, seed)
	}
	// The refill's restore, once runc made its cgroup.
	var restoring string
	waitFor(t, "a refill's restore with its cgroup", func() bool {
		matches, _ := filepath.Glob(glob)
		for _, m := range matches {
			if !existing[m] {
				restoring = m
				return true
			}
		}
		return false
	})
	// A second hit, created and not started: the gate pauses the restore for 50 ms,
	// lets it run 50, and so on.
	second := e.container(echoApp, templateAnn(name, false))
	r2, w2 := io.Pipe()
	defer w2.Close()
	var out2 syncBuffer
	created := make(chan error, 1)
	var task2 containerd.Task
	go func() {
		var err error
		task2, err = second.NewTask(e.ctx, streams(r2, &out2, io.Discard))
		created <- err
	}()
	// Watch the restore's freezer until a pause ended (frozen, then thawed) or the
	// restore ended.
	sawFrozen, sawThaw := false, false
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && !sawThaw; {
		v, err := os.ReadFile(restoring)
		if err != nil {
			break // the restore failed and runc removed its cgroup
		}
		switch strings.TrimSpace(string(v)) {
		case frozenValue, "FREEZING":
			sawFrozen = true
		case thawedValue:
			sawThaw = sawFrozen
		}
		if st, _, _ := ctl.Pool(name); st.Restoring == 0 {
			break
		}
		time.Sleep(500 * time.Microsecond)
	}
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	if !sawThaw {
		t.Fatalf("the restore %s was not seen paused and resumed during a hit's Create (frozen seen: %v)", restoring, sawFrozen)
	}
	exit2, err := task2.Wait(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task2.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := askSeed(t, w2, &out2, "second"); got != seed {
		t.Fatalf("second hit has seed %s, the template %s", got, seed)
	}
	if n, _, err := ctl.RefillPauses(); err != nil || n <= pauses0 {
		t.Fatalf("refill pauses %d -> %d (%v): want more", pauses0, n, err)
	}
	// The paused restore completed and serves with the template's state (the pool's
	// oldest sandboxes go first: two more hits reach it).
	waitFor(t, "pool refilled", func() bool {
		st, _, err := ctl.Pool(name)
		return err == nil && st.Frozen >= 2 && st.Restoring == 0
	})
	for i := 0; i < 2; i++ {
		x := startServed(t, e, name, seed, fmt.Sprint("after-paused-refill-", i))
		killAndDelete(t, e, nil, x.task, x.exit)
	}
	for _, x := range []struct {
		task containerd.Task
		exit <-chan containerd.ExitStatus
	}{{task1, exit1}, {task2, exit2}} {
		_ = x.task.Kill(e.ctx, syscall.SIGKILL)
		exitOf(t, x.exit)
	}
}

// TestPoolRestoreTimeout: a refill whose CRIU never answers (a stand-in that sleeps
// while a file exists, as CRIU waited for a breakpoint a host never fires) is killed
// after checkpoint_timeout with the CRIU under it, counted as a failed restore, and
// the pool refills once restores work again: its next hit continues from the template.
func TestPoolRestoreTimeout(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name, seed, hangFile, ctl := drainedTemplateThenHang(t, e, "rhang", "3604")
	t.Cleanup(func() { _ = ctl.Do("POST", "/pools/"+name+"/drain", nil) })
	if err := ctl.Do("POST", "/pools/"+name+"/prewarm?n=1", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a refill whose CRIU hangs", func() bool { return sleeping("3604") })
	waitForLog(t, "checkpoint_timeout=1s", "restore ran past checkpoint_timeout")
	waitFor(t, "the hung restore counted as failed", func() bool {
		st, ok, err := ctl.Pool(name)
		return err == nil && ok && st.Failed >= 1
	})
	if err := os.Remove(hangFile); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "no hanging CRIU left", func() bool { return !sleeping("3604") })
	waitFor(t, "pool refilled", func() bool {
		st, ok, err := ctl.Pool(name)
		return err == nil && ok && st.Frozen >= 1
	})
	x := startServed(t, e, name, seed, "after")
	killAndDelete(t, e, x.c, x.task, x.exit)
}

// TestRestoreOnCreateTimeout: a restore on create (the pool drained) whose CRIU never
// answers is killed after checkpoint_timeout with the CRIU under it: the Start returns
// an error instead of waiting forever, and the task can be deleted.
func TestRestoreOnCreateTimeout(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name, _, _, ctl := drainedTemplateThenHang(t, e, "ochang", "3605")
	c := e.container(echoApp, templateAnn(name, false))
	task, err := c.NewTask(e.ctx, nullIO())
	if err != nil {
		t.Fatalf("new task: %v", err)
	}
	if err := task.Start(e.ctx); err == nil {
		t.Fatal("the Start of a restore whose CRIU hangs succeeded")
	}
	waitForLog(t, "id="+c.ID(), "restore ran past checkpoint_timeout")
	waitFor(t, "no hanging CRIU left", func() bool { return !sleeping("3605") })
	if st, _, err := ctl.Pool(name); err != nil || len(st.Misses) == 0 {
		t.Fatalf("pool %s after the restore on create: %+v %v, want the miss counted", name, st, err)
	}
	if _, err := task.Delete(e.ctx, containerd.WithProcessKill); err != nil {
		t.Fatalf("delete after the killed restore: %v", err)
	}
}

// drainedTemplateThenHang makes a template (its pool filled, CRIU working) for e with a
// CRIU stand-in that runs `sleep MARKER` while the returned hang file exists, drains
// its pool and creates the file: the pool's next restore hangs. It returns the
// template's name and seed, the hang file and the pool shim's control client.
func drainedTemplateThenHang(t *testing.T, e *env, prefix, marker string) (name, seed, hangFile string, ctl *harness.Ctl) {
	t.Helper()
	hangFile = filepath.Join(tempDir(t), "hang")
	e.warmCfg = configWithCriuStandIn(t, marker, hangFile)
	name = prefix + "-" + shortName(t)
	seed = makeTemplate(t, e, name)
	ctl = harness.NewCtl(cd.WarmRun, cd.Namespace)
	if err := ctl.Do("POST", "/pools/"+name+"/drain", nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hangFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return name, seed, hangFile, ctl
}
