package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/warmshim/warm/test/harness"
)

func imagesSync() images.DeleteOpt { return images.SynchronousDelete() }

// env is what one case gets: a client, a context in the suite namespace, and the runtime.
type env struct {
	t       *testing.T
	ctx     context.Context
	client  *containerd.Client
	runtime string
	warmCfg string // ConfigPath for warm containers ("" = the suite's)
}

// syncBuffer is a bytes.Buffer safe for the cio copy goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it holds; the bound only stops a broken case from hanging.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 600; i++ {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what)
}

// waitForf is waitFor with a description computed when it gives up.
func waitForf(t *testing.T, what func() string, cond func() bool) {
	t.Helper()
	for i := 0; i < 600; i++ {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what())
}

func (e *env) runtimeOpt() containerd.NewContainerOpts {
	if e.runtime == harness.Warm {
		cfg := cd.WarmCfg
		if e.warmCfg != "" {
			cfg = e.warmCfg
		}
		return containerd.WithRuntime(harness.Warm, &runtimeoptions.Options{ConfigPath: cfg})
	}
	return containerd.WithRuntime(harness.Runc, &options.Options{BinaryName: cd.Env.Runc, Root: cd.RuncRoot})
}

// container creates a container of the busybox image running args, removed at the end.
func (e *env) container(args []string, opts ...oci.SpecOpts) containerd.Container {
	e.t.Helper()
	return e.containerWith(containerd.WithNewSnapshot, e.runtimeOpt(), args, opts...)
}

// containerWith is container with its root filesystem made by snapshot (given the
// snapshot's key and the image; e.g. one remapped for a user namespace) and runtime.
func (e *env) containerWith(snapshot func(string, containerd.Image, ...snapshots.Opt) containerd.NewContainerOpts, runtime containerd.NewContainerOpts, args []string, opts ...oci.SpecOpts) containerd.Container {
	e.t.Helper()
	img, err := e.client.GetImage(e.ctx, BusyboxRef)
	if err != nil {
		e.t.Fatal(err)
	}
	id := shortName(e.t)
	// The default devices' rules, as ctr and nerdctl add them: a template made here serves
	// their runs, and a pool hit needs the same device rules.
	specOpts := append([]oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs(args...), oci.WithDefaultUnixDevices}, opts...)
	c, err := e.client.NewContainer(e.ctx, id,
		containerd.WithImage(img),
		snapshot(id+"-snap", img),
		runtime,
		containerd.WithNewSpec(specOpts...),
	)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(e.ctx), time.Minute)
		defer cancel()
		if t, err := c.Task(ctx, nil); err == nil {
			if _, err := t.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				e.t.Errorf("delete task: %v", err)
			}
		}
		// A case may have removed it already.
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			e.t.Errorf("delete container: %v", err)
		}
	})
	return c
}

// events collects the task events of one container, in order.
type events struct {
	mu     sync.Mutex
	topics []string
	cancel context.CancelFunc
}

func (e *env) watch(id string) *events {
	ctx, cancel := context.WithCancel(e.ctx)
	ch, errs := e.client.EventService().Subscribe(ctx, `topic~="/tasks/"`)
	ev := &events{cancel: cancel}
	go func() {
		for {
			select {
			case m := <-ch:
				v, err := typeurl.UnmarshalAny(m.Event)
				if err != nil {
					continue
				}
				if cid, ok := containerOf(v); ok && cid == id {
					topic := m.Topic
					// An exec's exit is told apart from the init's by its exec id.
					if x, ok := v.(*eventstypes.TaskExit); ok && x.ID != id {
						topic += ":" + x.ID
					}
					ev.mu.Lock()
					ev.topics = append(ev.topics, topic)
					ev.mu.Unlock()
				}
			case <-errs:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	e.t.Cleanup(cancel)
	return ev
}

func containerOf(v any) (string, bool) {
	switch ev := v.(type) {
	case *eventstypes.TaskCreate:
		return ev.ContainerID, true
	case *eventstypes.TaskStart:
		return ev.ContainerID, true
	case *eventstypes.TaskExit:
		return ev.ContainerID, true
	case *eventstypes.TaskDelete:
		return ev.ContainerID, true
	case *eventstypes.TaskExecAdded:
		return ev.ContainerID, true
	case *eventstypes.TaskExecStarted:
		return ev.ContainerID, true
	case *eventstypes.TaskPaused:
		return ev.ContainerID, true
	case *eventstypes.TaskResumed:
		return ev.ContainerID, true
	case *eventstypes.TaskOOM:
		return ev.ContainerID, true
	}
	return "", false
}

func (ev *events) list() []string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return append([]string(nil), ev.topics...)
}

// wait waits for the topics to have arrived, in this order (others may be between).
func (ev *events) wait(t *testing.T, want ...string) {
	t.Helper()
	ok := func() bool {
		got := ev.list()
		i := 0
		for _, g := range got {
			if i < len(want) && g == want[i] {
				i++
			}
		}
		return i == len(want)
	}
	for i := 0; i < 600 && !ok(); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if !ok() {
		t.Fatalf("events %v do not contain %v in order", ev.list(), want)
	}
}

// start creates and starts a task with the given IO and returns it with its exit channel.
func (e *env) start(c containerd.Container, creator cio.Creator, opts ...containerd.NewTaskOpts) (containerd.Task, <-chan containerd.ExitStatus) {
	e.t.Helper()
	task, err := c.NewTask(e.ctx, creator, opts...)
	if err != nil {
		e.t.Fatalf("new task: %v", err)
	}
	exit, err := task.Wait(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := task.Start(e.ctx); err != nil {
		e.t.Fatalf("start: %v", err)
	}
	return task, exit
}

func exitOf(t *testing.T, ch <-chan containerd.ExitStatus) uint32 {
	t.Helper()
	select {
	case s := <-ch:
		code, _, err := s.Result()
		if err != nil {
			t.Fatal(err)
		}
		return code
	case <-time.After(60 * time.Second):
		t.Fatal("task did not exit")
	}
	return 0
}

func streams(stdin io.Reader, out, errw io.Writer) cio.Creator {
	return cio.NewCreator(cio.WithStreams(stdin, out, errw), cio.WithFIFODir(suiteDir))
}

// clientCases is the lifecycle table run through the containerd Go client.
var clientCases = []struct {
	name string
	run  func(e *env)
}{
	{"exit code and events", func(e *env) {
		c := e.container([]string{"sh", "-c", "exit 7"})
		ev := e.watch(c.ID())
		task, exit := e.start(c, cio.NullIO)
		if code := exitOf(e.t, exit); code != 7 {
			e.t.Fatalf("exit %d, want 7", code)
		}
		// The shim's exit event comes before containerd's delete.
		ev.wait(e.t, "/tasks/create", "/tasks/start", "/tasks/exit")
		if _, err := task.Delete(e.ctx); err != nil {
			e.t.Fatal(err)
		}
		// The delete event races the shim's exit after Delete (seen lost with runc's
		// own shim): when it arrives, it must come after the exit.
		for i := 0; i < 100 && !contains(ev.list(), "/tasks/delete"); i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if l := ev.list(); contains(l, "/tasks/delete") {
			ev.wait(e.t, "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete")
		}
	}},
	{"signal death is 128+n", func(e *env) {
		// The init is pid 1 of its namespace and immune to its own kill -9, so the
		// process that dies of a signal is an exec; the init is killed from outside.
		c := e.container([]string{"sleep", "1000"})
		task, exit := e.start(c, cio.NullIO)
		spec, _ := c.Spec(e.ctx)
		ps := *spec.Process
		ps.Args = []string{"sh", "-c", "kill -SEGV $$"}
		p, err := task.Exec(e.ctx, "segv", &ps, cio.NullIO)
		if err != nil {
			e.t.Fatal(err)
		}
		pexit, _ := p.Wait(e.ctx)
		if err := p.Start(e.ctx); err != nil {
			e.t.Fatal(err)
		}
		if code := exitOf(e.t, pexit); code != 128+11 {
			e.t.Fatalf("exec exit %d, want 139", code)
		}
		if err := task.Kill(e.ctx, syscall.SIGKILL); err != nil {
			e.t.Fatal(err)
		}
		if code := exitOf(e.t, exit); code != 137 {
			e.t.Fatalf("exit %d, want 137", code)
		}
	}},
	{"stdout and stderr", func(e *env) {
		c := e.container([]string{"sh", "-c", "echo to-out; echo to-err >&2"})
		var out, errb syncBuffer
		task, exit := e.start(c, streams(nil, &out, &errb))
		exitOf(e.t, exit)
		if _, err := task.Delete(e.ctx); err != nil { // waits for the IO to drain
			e.t.Fatal(err)
		}
		if out.String() != "to-out\n" || errb.String() != "to-err\n" {
			e.t.Fatalf("stdout %q stderr %q", out.String(), errb.String())
		}
	}},
	{"stdin and CloseIO", func(e *env) {
		c := e.container([]string{"cat"})
		r, w := io.Pipe()
		var out syncBuffer
		task, exit := e.start(c, streams(r, &out, io.Discard))
		if _, err := w.Write([]byte("hello stdin\n")); err != nil {
			e.t.Fatal(err)
		}
		waitFor(e.t, "echo of stdin", func() bool { return out.String() == "hello stdin\n" })
		w.Close()
		if err := task.CloseIO(e.ctx, containerd.WithStdinCloser); err != nil {
			e.t.Fatal(err)
		}
		if code := exitOf(e.t, exit); code != 0 {
			e.t.Fatalf("cat exit %d after CloseIO", code)
		}
	}},
	{"tty and resize", func(e *env) {
		c := e.container([]string{"sh", "-c", "read x; stty size"}, oci.WithTTY)
		r, w := io.Pipe()
		var out syncBuffer
		task, err := c.NewTask(e.ctx, cio.NewCreator(cio.WithStreams(r, &out, nil), cio.WithTerminal, cio.WithFIFODir(suiteDir)))
		if err != nil {
			e.t.Fatal(err)
		}
		exit, _ := task.Wait(e.ctx)
		if err := task.Start(e.ctx); err != nil {
			e.t.Fatal(err)
		}
		if err := task.Resize(e.ctx, 123, 45); err != nil {
			e.t.Fatal(err)
		}
		_, _ = w.Write([]byte("go\n"))
		exitOf(e.t, exit)
		waitFor(e.t, "stty output", func() bool { return strings.Contains(out.String(), "45 123") })
		w.Close()
	}},
	{"exec with and without tty", func(e *env) {
		c := e.container([]string{"sleep", "1000"})
		ev := e.watch(c.ID())
		task, exit := e.start(c, cio.NullIO)
		spec, err := c.Spec(e.ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		pspec := *spec.Process
		pspec.Args = []string{"sh", "-c", "echo exec-out; exit 3"}
		var out syncBuffer
		p, err := task.Exec(e.ctx, "plain", &pspec, streams(nil, &out, io.Discard))
		if err != nil {
			e.t.Fatal(err)
		}
		pexit, _ := p.Wait(e.ctx)
		if err := p.Start(e.ctx); err != nil {
			e.t.Fatal(err)
		}
		if code := exitOf(e.t, pexit); code != 3 {
			e.t.Fatalf("exec exit %d, want 3", code)
		}
		if _, err := p.Delete(e.ctx); err != nil {
			e.t.Fatal(err)
		}
		if out.String() != "exec-out\n" {
			e.t.Fatalf("exec stdout %q", out.String())
		}
		ev.wait(e.t, "/tasks/exec-added", "/tasks/exec-started", "/tasks/exit:plain")

		tspec := *spec.Process
		tspec.Terminal = true
		tspec.Args = []string{"tty"}
		var tout syncBuffer
		tp, err := task.Exec(e.ctx, "tty", &tspec, cio.NewCreator(cio.WithStreams(nil, &tout, nil), cio.WithTerminal, cio.WithFIFODir(suiteDir)))
		if err != nil {
			e.t.Fatal(err)
		}
		texit, _ := tp.Wait(e.ctx)
		if err := tp.Start(e.ctx); err != nil {
			e.t.Fatal(err)
		}
		exitOf(e.t, texit)
		if _, err := tp.Delete(e.ctx); err != nil {
			e.t.Fatal(err)
		}
		if !strings.Contains(tout.String(), "/dev/pts/") {
			e.t.Fatalf("tty exec printed %q", tout.String())
		}
		if err := task.Kill(e.ctx, syscall.SIGKILL); err != nil {
			e.t.Fatal(err)
		}
		exitOf(e.t, exit)
	}},
	{"signal handled by the process", func(e *env) {
		c := e.container([]string{"sh", "-c", "trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done"})
		var out syncBuffer
		task, exit := e.start(c, streams(nil, &out, io.Discard))
		waitFor(e.t, "trap installed", func() bool { return strings.Contains(out.String(), "ready") })
		if err := task.Kill(e.ctx, syscall.SIGTERM); err != nil {
			e.t.Fatal(err)
		}
		if code := exitOf(e.t, exit); code != 42 {
			e.t.Fatalf("exit %d, want 42", code)
		}
	}},
	{"kill all, exec exits before the init's", func(e *env) {
		c := e.container([]string{"sleep", "1000"})
		ev := e.watch(c.ID())
		task, exit := e.start(c, cio.NullIO)
		spec, _ := c.Spec(e.ctx)
		ps := *spec.Process
		ps.Args = []string{"sleep", "1001"}
		p, err := task.Exec(e.ctx, "sleeper", &ps, cio.NullIO)
		if err != nil {
			e.t.Fatal(err)
		}
		pexit, _ := p.Wait(e.ctx)
		if err := p.Start(e.ctx); err != nil {
			e.t.Fatal(err)
		}
		if err := task.Kill(e.ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil {
			e.t.Fatal(err)
		}
		if code := exitOf(e.t, pexit); code != 137 {
			e.t.Fatalf("exec exit %d, want 137", code)
		}
		if code := exitOf(e.t, exit); code != 137 {
			e.t.Fatalf("init exit %d, want 137", code)
		}
		ev.wait(e.t, "/tasks/exit:sleeper", "/tasks/exit")
		for _, topic := range ev.list() {
			if topic == "/tasks/exit:sleeper" {
				break
			}
			if topic == "/tasks/exit" {
				e.t.Fatalf("init's exit published before the exec's: %v", ev.list())
			}
		}
	}},
	{"pause and resume", func(e *env) {
		c := e.container([]string{"sleep", "1000"})
		ev := e.watch(c.ID())
		task, _ := e.start(c, cio.NullIO)
		if err := task.Pause(e.ctx); err != nil {
			e.t.Fatal(err)
		}
		if st, _ := task.Status(e.ctx); st.Status != containerd.Paused {
			e.t.Fatalf("status %s after pause", st.Status)
		}
		if err := task.Resume(e.ctx); err != nil {
			e.t.Fatal(err)
		}
		if st, _ := task.Status(e.ctx); st.Status != containerd.Running {
			e.t.Fatalf("status %s after resume", st.Status)
		}
		ev.wait(e.t, "/tasks/paused", "/tasks/resumed")
	}},
	{"pids", func(e *env) {
		c := e.container([]string{"sh", "-c", "sleep 1000 & sleep 1000 & wait"})
		task, _ := e.start(c, cio.NullIO)
		spec, _ := c.Spec(e.ctx)
		ps := *spec.Process
		ps.Args = []string{"sleep", "1002"}
		p, err := task.Exec(e.ctx, "execd", &ps, cio.NullIO)
		if err != nil {
			e.t.Fatal(err)
		}
		if err := p.Start(e.ctx); err != nil {
			e.t.Fatal(err)
		}
		var infos []containerd.ProcessInfo
		waitFor(e.t, "4 pids", func() bool {
			infos, err = task.Pids(e.ctx)
			return err == nil && len(infos) >= 4
		})
		found := false
		for _, pi := range infos {
			if pi.Info == nil {
				continue
			}
			v, err := typeurl.UnmarshalAny(pi.Info)
			if err != nil {
				e.t.Fatal(err)
			}
			if d, ok := v.(*options.ProcessDetails); ok && d.ExecID == "execd" && pi.Pid == p.Pid() {
				found = true
			}
		}
		if !found {
			e.t.Fatalf("pids %v do not name exec %q (pid %d)", infos, "execd", p.Pid())
		}
	}},
	{"stats and update", func(e *env) {
		c := e.container([]string{"sleep", "1000"})
		task, _ := e.start(c, cio.NullIO)
		const limit = 96 << 20
		if err := task.Update(e.ctx, containerd.WithResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(limit))}})); err != nil {
			e.t.Fatal(err)
		}
		m, err := task.Metrics(e.ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		v, err := typeurl.UnmarshalAny(m.Data)
		if err != nil {
			e.t.Fatal(err)
		}
		switch s := v.(type) {
		case *cgroupsv1.Metrics:
			if s.Memory.Usage.Usage == 0 || s.Pids.Current < 1 {
				e.t.Fatalf("empty v1 stats: %+v", s)
			}
			if s.Memory.Usage.Limit != limit {
				e.t.Fatalf("v1 memory limit %d after update, want %d", s.Memory.Usage.Limit, limit)
			}
		case *cgroupsv2.Metrics:
			if s.Memory.Usage == 0 || s.Pids.Current < 1 {
				e.t.Fatalf("empty v2 stats: %+v", s)
			}
			if s.Memory.UsageLimit != limit {
				e.t.Fatalf("v2 memory limit %d after update, want %d", s.Memory.UsageLimit, limit)
			}
		default:
			e.t.Fatalf("stats of type %T, want cgroups v3 metrics", v)
		}
	}},
	{"OOM event under a memory limit", func(e *env) {
		c := e.container([]string{"tail", "/dev/zero"}, oci.WithMemoryLimit(32<<20))
		ev := e.watch(c.ID())
		_, exit := e.start(c, cio.NullIO)
		if code := exitOf(e.t, exit); code != 137 {
			e.t.Fatalf("exit %d, want 137 (OOM kill)", code)
		}
		ev.wait(e.t, "/tasks/oom")
	}},
	{"checkpoint then restore from the checkpoint image", func(e *env) {
		c := e.container([]string{"sh", "-c", "i=0; while true; do i=$((i+1)); echo $i; sleep 0.02; done"})
		var out syncBuffer
		task, exit := e.start(c, streams(nil, &out, io.Discard))
		waitFor(e.t, "counter at 20", func() bool { return lastNumber(out.String()) >= 20 })
		ckpt, err := task.Checkpoint(e.ctx)
		if err != nil {
			e.t.Fatalf("checkpoint: %v", err)
		}
		e.t.Cleanup(func() {
			_ = e.client.ImageService().Delete(context.WithoutCancel(e.ctx), ckpt.Name(), images.SynchronousDelete())
		})
		at := lastNumber(out.String())
		if err := task.Kill(e.ctx, syscall.SIGKILL); err != nil {
			e.t.Fatal(err)
		}
		exitOf(e.t, exit)
		if _, err := task.Delete(e.ctx); err != nil {
			e.t.Fatal(err)
		}
		var out2 syncBuffer
		task2, _ := e.start(c, streams(nil, &out2, io.Discard), containerd.WithTaskCheckpoint(ckpt))
		waitFor(e.t, "restored output", func() bool { return strings.Count(out2.String(), "\n") >= 2 })
		if first := firstNumber(out2.String()); first < 20 || first > at+5 {
			e.t.Fatalf("restored counter starts at %d; checkpointed near %d (a cold start would print 1)", first, at)
		}
		if err := task2.Kill(e.ctx, syscall.SIGKILL); err != nil {
			e.t.Fatal(err)
		}
	}},
	{"checkpoint then restore from an image path", func(e *env) {
		c := e.container([]string{"sh", "-c", "i=0; while true; do i=$((i+1)); echo $i; sleep 0.02; done"})
		var out syncBuffer
		task, exit := e.start(c, streams(nil, &out, io.Discard))
		waitFor(e.t, "counter at 20", func() bool { return lastNumber(out.String()) >= 20 })
		dir := tempDir(e.t)
		ckpt, err := task.Checkpoint(e.ctx, containerd.WithCheckpointImagePath(dir), containerd.WithCheckpointName("ckpt-"+c.ID()))
		if err != nil {
			e.t.Fatalf("checkpoint: %v", err)
		}
		if ckpt.Name() != "" {
			e.t.Cleanup(func() {
				_ = e.client.ImageService().Delete(context.WithoutCancel(e.ctx), ckpt.Name(), images.SynchronousDelete())
			})
		}
		at := lastNumber(out.String())
		_ = task.Kill(e.ctx, syscall.SIGKILL)
		exitOf(e.t, exit)
		if _, err := task.Delete(e.ctx); err != nil {
			e.t.Fatal(err)
		}
		var out2 syncBuffer
		// Restoring from a path takes runc's task options (CriuImagePath) for either runtime.
		withPath := func(_ context.Context, _ *containerd.Client, ti *containerd.TaskInfo) error {
			ti.Options = &options.Options{BinaryName: cd.Env.Runc, Root: cd.RuncRoot, CriuImagePath: dir}
			return nil
		}
		task2, _ := e.start(c, streams(nil, &out2, io.Discard), withPath)
		waitFor(e.t, "restored output", func() bool { return strings.Count(out2.String(), "\n") >= 2 })
		if first := firstNumber(out2.String()); first < 20 || first > at+5 {
			e.t.Fatalf("restored counter starts at %d; checkpointed near %d", first, at)
		}
		_ = task2.Kill(e.ctx, syscall.SIGKILL)
	}},
	{"containerd restart while the task runs", func(e *env) {
		c := e.container([]string{"sh", "-c", "trap 'exit 9' TERM; while true; do sleep 0.05; done"})
		task, _ := e.start(c, cio.NullIO)
		pid := task.Pid()
		if err := cd.Restart(); err != nil {
			e.t.Fatal(err)
		}
		client, err := cd.Client()
		if err != nil {
			e.t.Fatal(err)
		}
		defer client.Close()
		c2, err := client.LoadContainer(e.ctx, c.ID())
		if err != nil {
			e.t.Fatal(err)
		}
		t2, err := c2.Task(e.ctx, nil)
		if err != nil {
			e.t.Fatalf("task after restart: %v", err)
		}
		st, err := t2.Status(e.ctx)
		if err != nil || st.Status != containerd.Running || t2.Pid() != pid {
			e.t.Fatalf("after restart: status %v pid %d (was %d) err %v", st.Status, t2.Pid(), pid, err)
		}
		exit, err := t2.Wait(e.ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		if err := t2.Kill(e.ctx, syscall.SIGTERM); err != nil {
			e.t.Fatal(err)
		}
		if code := exitOf(e.t, exit); code != 9 {
			e.t.Fatalf("exit %d after restart, want 9", code)
		}
	}},
}

func ptr[T any](v T) *T { return &v }

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func lastNumber(s string) int {
	f := strings.Fields(s)
	for i := len(f) - 1; i >= 0; i-- {
		if n, err := strconv.Atoi(f[i]); err == nil {
			return n
		}
	}
	return 0
}

func firstNumber(s string) int {
	for _, f := range strings.Fields(s) {
		if n, err := strconv.Atoi(f); err == nil {
			return n
		}
	}
	return -1
}

// TestLifecycleClient runs the lifecycle table through the Go client for runc and warm.
func TestLifecycleClient(t *testing.T) {
	need(t)
	for _, rt := range Runtimes {
		t.Run(rtName(rt), func(t *testing.T) {
			for _, tc := range clientCases {
				t.Run(tc.name, func(t *testing.T) { tc.run(newEnv(t, rt)) })
			}
		})
	}
}

// newEnv gives a test a client and a context in the suite namespace.
func newEnv(t *testing.T, rt string) *env {
	client, err := cd.Client()
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-in first-out: the test's own cleanups still have the client.
	t.Cleanup(func() { client.Close() })
	ctx, cancel := context.WithTimeout(cd.Context(context.Background()), 3*time.Minute)
	t.Cleanup(cancel)
	return &env{t: t, ctx: ctx, client: client, runtime: rt}
}

func withKill() containerd.ProcessDeleteOpts { return containerd.WithProcessKill }

func rtName(rt string) string {
	return fmt.Sprint(strings.Split(rt, ".")[2])
}

func nullIO() cio.Creator { return cio.NullIO }

// The benchmark variants of the helpers: a *testing.B instead of a *testing.T.

type envB struct {
	*env
	b *testing.B
}

func newEnvB(b *testing.B) *envB {
	client, err := cd.Client()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { client.Close() })
	ctx, cancel := context.WithTimeout(cd.Context(context.Background()), 10*time.Minute)
	b.Cleanup(cancel)
	return &envB{env: &env{ctx: ctx, client: client, runtime: harness.Warm}, b: b}
}

func (e *envB) containerB(args []string, opts ...oci.SpecOpts) containerd.Container {
	img, err := e.client.GetImage(e.ctx, BusyboxRef)
	if err != nil {
		e.b.Fatal(err)
	}
	id := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	c, err := e.client.NewContainer(e.ctx, id, containerd.WithImage(img), containerd.WithNewSnapshot(id+"-snap", img),
		e.runtimeOpt(), containerd.WithNewSpec(append([]oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs(args...), oci.WithDefaultUnixDevices}, opts...)...))
	if err != nil {
		e.b.Fatal(err)
	}
	e.b.Cleanup(func() { _ = c.Delete(context.WithoutCancel(e.ctx), containerd.WithSnapshotCleanup) })
	return c
}

func waitForB(b *testing.B, cond func() bool) {
	for i := 0; i < 3000; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatal("gave up waiting")
}

func makeTemplateB(b *testing.B, e *envB, name string) {
	c := e.containerB(echoApp, templateAnn(name, true))
	// stdin stays open (the application answers lines until EOF).
	r, w := io.Pipe()
	b.Cleanup(func() { w.Close() })
	task, err := c.NewTask(e.ctx, cio.NewCreator(cio.WithStreams(r, io.Discard, io.Discard), cio.WithFIFODir(suiteDir)))
	if err != nil {
		b.Fatal(err)
	}
	if err := task.Start(e.ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _, _ = task.Delete(context.WithoutCancel(e.ctx), containerd.WithProcessKill) })
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	waitForB(b, func() bool { s, ok, _ := ctl.Pool(name); return ok && s.Frozen >= 1 })
}
