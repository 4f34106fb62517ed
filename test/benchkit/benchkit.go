// Package benchkit measures container start latency on an isolated containerd, the same
// way for every runtime and mode, for `make bench` and `make demo`.
package benchkit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/warmshim/warm/pool"
	"github.com/warmshim/warm/test/harness"
)

// PoolConfig is the pool section the benchmarks run with: acquire_timeout 0 makes an
// empty pool fall back to restore-on-create at once (the restore-on-create row drains
// the pool for that).
const PoolConfig = `
[pool]
min = 1
max = 10
initial = 1
refill_batch = 4
refill_interval = "20ms"
acquire_timeout = "0s"

# The bench's KSM rows (-ksm): pools whose sandboxes are restored mergeable.
[pools.bench-go-ksm]
ksm = true
[pools.bench-python-ksm]
ksm = true

[recovery]
crash_loop_max = 1000
`

// Row is one measured series, in milliseconds.
type Row struct {
	App     string    `json:"app"`
	Mode    string    `json:"mode"`
	Runs    int       `json:"runs"`
	Median  float64   `json:"median_ms"`
	P90     float64   `json:"p90_ms"`
	P99     float64   `json:"p99_ms"`
	Samples []float64 `json:"samples_ms"`
}

// Summarize computes a row's percentiles (nearest rank).
func Summarize(app, mode string, s []float64) Row {
	sorted := append([]float64(nil), s...)
	sort.Float64s(sorted)
	return Row{App: app, Mode: mode, Runs: len(s), Median: pct(sorted, 50), P90: pct(sorted, 90), P99: pct(sorted, 99), Samples: s}
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted))+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

// App is a sample application image.
type App struct {
	Name  string   // short name: go, python
	Image string   // reference
	Args  []string // command
}

// Apps returns the sample applications, building their images into workDir.
func Apps(workDir string) (goApp App, pyApp App, files map[string][]harness.File, err error) {
	files = map[string][]harness.File{}
	if files["go"], err = harness.GoServiceFiles(workDir); err != nil {
		return
	}
	if files["python"], err = harness.PythonFiles(); err != nil {
		return
	}
	goApp = App{Name: "go", Image: "docker.io/warmbench/goservice:1", Args: []string{"/app/goservice"}}
	pyApp = App{Name: "python", Image: "docker.io/warmbench/pyservice:1", Args: []string{"/usr/bin/python3", "/app/service.py"}}
	return
}

// Env is a running benchmark environment.
type Env struct {
	CD     *harness.Containerd
	Client *containerd.Client
	Ctx    context.Context
	Ctl    *harness.Ctl
	seq    int
	mu     sync.Mutex
}

// ID returns a fresh container id.
func (e *Env) ID(prefix string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), e.seq)
}

// Import builds and imports an image.
func (e *Env) Import(ref string, files []harness.File) error {
	return harness.ImportImage(e.Ctx, e.Client, ref, files, ocispec.ImageConfig{Env: []string{"PATH=/usr/bin:/bin"}})
}

// CtrFirstReply runs `ctr run --rm` with the given flags and measures from the start of
// ctr to the first line of the application's reply to "ping".
func (e *Env) CtrFirstReply(flags []string, app App) (time.Duration, error) {
	d, _, err := e.CtrFirstReplyCPU(flags, app)
	return d, err
}

// CtrFirstReplyCPU is CtrFirstReply that also returns the CPU time (user and system) the
// ctr process spent in its whole run, its --rm delete included.
func (e *Env) CtrFirstReplyCPU(flags []string, app App) (reply, ctrCPU time.Duration, err error) {
	id := e.ID("b" + app.Name)
	args := append([]string{"--address", e.CD.Address, "--namespace", e.CD.Namespace, "run", "--rm"}, flags...)
	args = append(append(args, app.Image, id), app.Args...)
	cmd := exec.CommandContext(e.Ctx, e.CD.Env.Ctr, args...)
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, 0, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	cmd.Stderr = io.Discard
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	_, _ = stdin.Write([]byte("ping\n"))
	d, rerr := firstReply(stdout, start)
	// EOF on stdin ends the application once the reply shows the task exists.
	stdin.Close()
	go io.Copy(io.Discard, stdout)
	werr := cmd.Wait()
	if rerr != nil {
		return 0, 0, fmt.Errorf("%s: %w (ctr: %v)", strings.Join(args, " "), rerr, werr)
	}
	return d, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

func firstReply(r io.Reader, start time.Time) (time.Duration, error) {
	type res struct {
		d   time.Duration
		err error
	}
	ch := make(chan res, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "reply ") {
				ch <- res{d: time.Since(start)}
				return
			}
		}
		ch <- res{err: fmt.Errorf("no reply (output ended: %v)", sc.Err())}
	}()
	select {
	case x := <-ch:
		return x.d, x.err
	case <-time.After(60 * time.Second):
		return 0, fmt.Errorf("no reply within 60s")
	}
}

// ClientFirstReply is CtrFirstReply through containerd's Go client in this process (as
// containerd's CRI plugin drives containerd, one client for many containers): from
// creating the container to the application's first reply. annotations go on the spec.
func (e *Env) ClientFirstReply(app App, annotations map[string]string) (time.Duration, error) {
	start := time.Now()
	img, err := e.Client.GetImage(e.Ctx, app.Image)
	if err != nil {
		return 0, err
	}
	id := e.ID("g" + app.Name)
	c, err := e.Client.NewContainer(e.Ctx, id, containerd.WithImage(img), containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime(harness.Warm, &runtimeoptions.Options{ConfigPath: e.CD.WarmCfg}),
		// ctr's default devices: the template was made with ctr, and a hit needs its device rules.
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(app.Args...), oci.WithDefaultUnixDevices, oci.WithAnnotations(annotations)))
	if err != nil {
		return 0, err
	}
	defer c.Delete(context.WithoutCancel(e.Ctx), containerd.WithSnapshotCleanup)
	pr, pw := io.Pipe()
	or, ow := io.Pipe()
	defer ow.Close()
	task, err := c.NewTask(e.Ctx, cio.NewCreator(cio.WithStreams(pr, ow, io.Discard), cio.WithFIFODir(e.CD.Dir)))
	if err != nil {
		return 0, err
	}
	defer task.Delete(context.WithoutCancel(e.Ctx), containerd.WithProcessKill)
	if err := task.Start(e.Ctx); err != nil {
		return 0, err
	}
	go func() { _, _ = pw.Write([]byte("ping\n")) }()
	d, err := firstReply(or, start)
	pw.Close()
	go io.Copy(io.Discard, or)
	return d, err
}

// CtrTrue measures `ctr run --rm IMAGE true`.
func (e *Env) CtrTrue(flags []string, image string) (time.Duration, error) {
	args := append([]string{"run", "--rm"}, flags...)
	args = append(args, image, e.ID("true"), "true")
	start := time.Now()
	out, err := e.CD.Ctr(e.Ctx, nil, args...)
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, out)
	}
	return time.Since(start), nil
}

// MakeTemplate starts a template-making container of app through warm and waits until
// its pool holds a frozen sandbox.
func (e *Env) MakeTemplate(app App, name string) error {
	flags := append([]string{"-d", "--annotation", "io.containerd.warm.template=" + name,
		"--annotation", "io.containerd.warm.ready=file:/tmp/ready"}, e.CD.RuntimeFlags(harness.Warm)...)
	args := append(append([]string{"run"}, flags...), app.Image, "maker-"+name)
	args = append(args, app.Args...)
	if out, err := e.CD.Ctr(e.Ctx, nil, args...); err != nil {
		return fmt.Errorf("template maker: %v: %s", err, out)
	}
	return e.WaitFrozen(name, 1)
}

// RemoveMaker stops the template maker (its template stays).
func (e *Env) RemoveMaker(name string) {
	_, _ = e.CD.Ctr(e.Ctx, nil, "task", "kill", "-s", "SIGKILL", "maker-"+name)
	for i := 0; i < 100; i++ {
		if out, _ := e.CD.Ctr(e.Ctx, nil, "task", "rm", "maker-"+name); !strings.Contains(out, "running") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, _ = e.CD.Ctr(e.Ctx, nil, "container", "rm", "maker-"+name)
}

// WaitFrozen waits until the template's pool holds n frozen sandboxes.
func (e *Env) WaitFrozen(name string, n int) error {
	return e.waitPool(name, fmt.Sprintf("reached %d frozen sandboxes", n), func(st pool.Stats) bool { return st.Frozen >= n })
}

// WaitSettled waits until the template's pool holds a frozen sandbox and restores none:
// a hit then has no refill beside it.
func (e *Env) WaitSettled(name string) error {
	return e.waitPool(name, "settled", func(st pool.Stats) bool { return st.Frozen >= 1 && st.Restoring == 0 })
}

// waitPool waits up to 2 minutes until the template's pool's stats satisfy ok.
func (e *Env) waitPool(name, what string, ok func(pool.Stats) bool) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if st, found, err := e.Ctl.Pool(name); err == nil && found && ok(st) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, _, err := e.Ctl.Pool(name)
	return fmt.Errorf("pool %s never %s: %+v %v", name, what, st, err)
}

// nativeCheckpointTimeout bounds one native checkpoint: CRIU can hang in its dump
// (seen once here: waiting in wait4 for the task to trap after the parasite's
// sigreturn, criu issue #162), and containerd's runc shim has no timeout of its own.
const nativeCheckpointTimeout = 2 * time.Minute

// NativeCheckpoint runs app through runc, waits until it answers, and checkpoints it as
// `ctr c checkpoint --task` does, into image ref. A checkpoint that runs past
// nativeCheckpointTimeout is abandoned (its container killed, which ends a hung CRIU)
// and tried again with a new container, twice at most.
func (e *Env) NativeCheckpoint(app App, ref string) error {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = e.nativeCheckpoint(app, ref, attempt); !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		fmt.Fprintf(os.Stderr, "bench: %s: native checkpoint ran past %v (attempt %d): %v\n", app.Name, nativeCheckpointTimeout, attempt, err)
	}
	return err
}

func (e *Env) nativeCheckpoint(app App, ref string, attempt int) error {
	img, err := e.Client.GetImage(e.Ctx, app.Image)
	if err != nil {
		return err
	}
	id := e.ID(fmt.Sprintf("ck%s%d", app.Name, attempt))
	c, err := e.Client.NewContainer(e.Ctx, id, containerd.WithImage(img), containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime(harness.Runc, nil), containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(app.Args...)))
	if err != nil {
		return err
	}
	defer c.Delete(e.Ctx, containerd.WithSnapshotCleanup)
	pr, pw := io.Pipe()
	defer pw.Close()
	or, ow := io.Pipe()
	task, err := c.NewTask(e.Ctx, cio.NewCreator(cio.WithStreams(pr, ow, io.Discard), cio.WithFIFODir(e.CD.Dir)))
	if err != nil {
		return err
	}
	// A killed task ends a CRIU that hangs on it: the dump's wait for it returns.
	defer task.Delete(e.Ctx, containerd.WithProcessKill)
	if err := task.Start(e.Ctx); err != nil {
		return err
	}
	_, _ = pw.Write([]byte("ping\n"))
	if _, err := firstReply(or, time.Now()); err != nil {
		return err
	}
	go io.Copy(io.Discard, or)
	ctx, cancel := context.WithTimeout(e.Ctx, nativeCheckpointTimeout)
	defer cancel()
	if _, err := c.Checkpoint(ctx, ref, containerd.WithCheckpointRuntime, containerd.WithCheckpointTask); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return fmt.Errorf("checkpoint: %w", err)
	}
	_ = task.Kill(e.Ctx, syscall.SIGKILL)
	return nil
}

// NativeRestoreFirstReply restores the checkpoint as `ctr c restore --live` does
// (client.Restore, then a task from the checkpoint) and measures to the first reply.
func (e *Env) NativeRestoreFirstReply(app App, ref string) (time.Duration, error) {
	ck, err := e.Client.GetImage(e.Ctx, ref)
	if err != nil {
		return 0, err
	}
	id := e.ID("rs" + app.Name)
	start := time.Now()
	c, err := e.Client.Restore(e.Ctx, id, ck, containerd.WithRestoreImage, containerd.WithRestoreSpec, containerd.WithRestoreRuntime)
	if err != nil {
		return 0, err
	}
	defer c.Delete(e.Ctx, containerd.WithSnapshotCleanup)
	pr, pw := io.Pipe()
	or, ow := io.Pipe()
	task, err := c.NewTask(e.Ctx, cio.NewCreator(cio.WithStreams(pr, ow, io.Discard), cio.WithFIFODir(e.CD.Dir)), containerd.WithTaskCheckpoint(ck))
	if err != nil {
		return 0, err
	}
	defer task.Delete(e.Ctx, containerd.WithProcessKill)
	if err := task.Start(e.Ctx); err != nil {
		return 0, err
	}
	_, _ = pw.Write([]byte("ping\n"))
	d, err := firstReply(or, start)
	go io.Copy(io.Discard, or)
	_ = task.Kill(e.Ctx, syscall.SIGKILL)
	pw.Close()
	return d, err
}

// DeleteImage removes an image.
func (e *Env) DeleteImage(ref string) {
	_ = e.Client.ImageService().Delete(e.Ctx, ref, images.SynchronousDelete())
}

// RecoveryContainer starts app through warm with crash recovery and periodic
// checkpoints, answering on stdin, and returns a function that kills its init with
// SIGKILL and measures the time until it answers again.
// With standby, the container keeps a recovery standby, and each kill waits until a
// standby restored from the newest checkpoint is ready.
func (e *Env) RecoveryContainer(app App, interval string, standby bool) (killAndAsk func() (time.Duration, error), stop func(), err error) {
	img, err := e.Client.GetImage(e.Ctx, app.Image)
	if err != nil {
		return nil, nil, err
	}
	id := e.ID("rec" + app.Name)
	c, err := e.Client.NewContainer(e.Ctx, id, containerd.WithImage(img), containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime(harness.Warm, &runtimeoptions.Options{ConfigPath: e.CD.WarmCfg}),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(app.Args...), oci.WithAnnotations(map[string]string{
			"io.containerd.warm.recovery": "on", "io.containerd.warm.checkpoint-interval": interval,
			"io.containerd.warm.recovery-standby": fmt.Sprint(standby)})))
	if err != nil {
		return nil, nil, err
	}
	standbysReady := func() int { return e.CD.LogLines("container="+id+" ", `msg="recovery standby ready"`) }
	standbysSeen := 0
	pr, pw := io.Pipe()
	or, ow := io.Pipe()
	task, err := c.NewTask(e.Ctx, cio.NewCreator(cio.WithStreams(pr, ow, io.Discard), cio.WithFIFODir(e.CD.Dir)))
	if err != nil {
		c.Delete(e.Ctx, containerd.WithSnapshotCleanup)
		return nil, nil, err
	}
	stop = func() {
		_, _ = task.Delete(e.Ctx, containerd.WithProcessKill)
		_ = c.Delete(e.Ctx, containerd.WithSnapshotCleanup)
		pw.Close()
	}
	if err := task.Start(e.Ctx); err != nil {
		stop()
		return nil, nil, err
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(or)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "reply ") {
				lines <- sc.Text()
			}
		}
		close(lines)
	}()
	ask := func(start time.Time) (time.Duration, error) {
		if _, err := pw.Write([]byte("ping\n")); err != nil {
			return 0, err
		}
		deadline := time.After(60 * time.Second)
		for {
			select {
			case _, ok := <-lines:
				if !ok {
					return 0, fmt.Errorf("output ended")
				}
				// Drain answers to repeated questions.
				for len(lines) > 0 {
					<-lines
				}
				return time.Since(start), nil
			case <-time.After(2 * time.Second):
				// A question the dying task took out of its pipe is lost with it: ask again.
				if _, err := pw.Write([]byte("ping\n")); err != nil {
					return 0, err
				}
			case <-deadline:
				return 0, fmt.Errorf("no reply within 60s")
			}
		}
	}
	if _, err := ask(time.Now()); err != nil {
		stop()
		return nil, nil, err
	}
	killAndAsk = func() (time.Duration, error) {
		// The previous recovery may still be finishing (its health check runs after
		// the task already answered): wait until the task's pid is a live process.
		var pid uint32
		for i := 0; i < 500; i++ {
			t, err := c.Task(e.Ctx, nil)
			if err == nil {
				if st, err := t.Status(e.Ctx); err == nil && st.Status == containerd.Running && syscall.Kill(int(t.Pid()), 0) == nil {
					pid = t.Pid()
					break
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		if pid == 0 {
			return 0, fmt.Errorf("task %s not running", id)
		}
		// A checkpoint must exist: wait for the first one after the task (re)started.
		cps := filepath.Join(e.CD.WarmState, "checkpoints", e.CD.Namespace, id)
		for i := 0; i < 600; i++ {
			if m, _ := filepath.Glob(filepath.Join(cps, "c*")); len(m) > 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if standby {
			// A standby made after the last recovery, i.e. from the newest checkpoint.
			for i := 0; i < 1000 && standbysReady() <= standbysSeen; i++ {
				time.Sleep(5 * time.Millisecond)
			}
			standbysSeen = standbysReady()
		}
		start := time.Now()
		if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
			return 0, err
		}
		return ask(start)
	}
	return killAndAsk, stop, nil
}

// StandbyRecoveries counts the recoveries of containers with the id prefix that adopted
// a standby, and all of them.
func (e *Env) StandbyRecoveries(prefix string) (fromStandby, all int) {
	return e.CD.LogLines("container="+prefix, `msg="task recovered"`, "standby=true"),
		e.CD.LogLines("container="+prefix, `msg="task recovered"`)
}

// RecoveryLog reads the shim's recovery records from containerd's log: detection
// latency (exit to recovery start) per recovery, and per periodic checkpoint the task's
// pause (from the shim freezing it to its thaw; CRIU's freezing + frozen time when the
// shim could not freeze it) and the whole checkpoint call, for a container
// id prefix.
func (e *Env) RecoveryLog(prefix string) (detection, pauses, calls []float64) {
	data, _ := os.ReadFile(e.CD.LogPath)
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.Contains(l, "container="+prefix) {
			continue
		}
		if strings.Contains(l, `msg="task recovered"`) {
			if d, ok := field(l, "detection"); ok {
				detection = append(detection, d)
			}
		}
		if strings.Contains(l, `msg="periodic checkpoint"`) {
			if d, ok := field(l, "pause"); ok {
				pauses = append(pauses, d)
			}
			if d, ok := field(l, "took"); ok {
				calls = append(calls, d)
			}
		}
	}
	return detection, pauses, calls
}

// field parses a duration field (name=1.5ms or name="1.5ms") of a logrus line, in ms.
func field(line, name string) (float64, bool) {
	i := strings.Index(line, " "+name+"=")
	if i < 0 {
		return 0, false
	}
	v := line[i+len(name)+2:]
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	d, err := time.ParseDuration(strings.Trim(v, `"`))
	if err != nil {
		return 0, false
	}
	return float64(d.Microseconds()) / 1000, true
}

// Start starts an isolated containerd under /tmp/<prefix>-* with the benchmark pool
// configuration and returns the environment and a function that drains the pools, stops
// containerd, reports anything left behind and removes the directory.
func Start(prefix, ns string) (*Env, func(), error) {
	env, err := harness.FindEnv()
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("/tmp", prefix+"-")
	if err != nil {
		return nil, nil, err
	}
	cd, err := harness.StartWith(env, dir, ns, PoolConfig)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	client, err := cd.Client()
	if err != nil {
		_ = cd.Stop()
		os.RemoveAll(dir)
		return nil, nil, err
	}
	e := &Env{CD: cd, Client: client, Ctx: cd.Context(context.Background()), Ctl: harness.NewCtl(cd.WarmRun, ns)}
	stop := func() {
		_ = e.Ctl.Do("POST", "/shutdown", nil)
		// The pool shim exits once its pools are drained: wait for it while containerd
		// still serves the snapshot and lease removals.
		for i := 0; i < 600 && len(harness.ShimProcesses(dir)) > 0; i++ {
			time.Sleep(50 * time.Millisecond)
		}
		// containerd's log (with the shims') and the pool shim's own stay for a look
		// after the run.
		if data, err := os.ReadFile(cd.LogPath); err == nil {
			_ = os.WriteFile(filepath.Join(os.TempDir(), prefix+"-containerd.log"), data, 0o600)
		}
		if data, err := os.ReadFile(filepath.Join(cd.WarmRun, ns, "pool-shim.log")); err == nil {
			_ = os.WriteFile(filepath.Join(os.TempDir(), prefix+"-pool-shim.log"), data, 0o600)
		}
		client.Close()
		_ = cd.Stop()
		harness.RemoveNamespaceCgroups(ns)
		if leaks := harness.Leaks(dir, ns); len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "left behind: %v\n", leaks)
		} else {
			fmt.Fprintln(os.Stderr, "cleaned up: no shim, mount or cgroup left")
		}
		if err := cd.Release(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		os.RemoveAll(dir)
	}
	return e, stop, nil
}
