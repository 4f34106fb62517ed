package shim

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/oom"
	oomv1 "github.com/containerd/containerd/v2/pkg/oom/v1"
	oomv2 "github.com/containerd/containerd/v2/pkg/oom/v2"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	runcC "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"github.com/moby/sys/userns"
	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/warmshim/warm/internal/group"
	"github.com/warmshim/warm/internal/hwbreak"
	"github.com/warmshim/warm/internal/runctask"
	"github.com/warmshim/warm/oci"
	"github.com/warmshim/warm/recovery"
)

var (
	_     = shim.TTRPCService(&service{})
	empty = &ptypes.Empty{}
)

// NewTaskService returns warm's task service: containers run through containerd's runc
// shim packages (process, runc, stdio, reaper); warm owns the service around them.
func NewTaskService(ctx context.Context, publisher shim.Publisher, sd shutdown.Service, grpcAddress string) (taskAPI.TTRPCTaskService, error) {
	var (
		ep  oom.Watcher
		err error
	)
	if cgroups.Mode() == cgroups.Unified {
		ep, err = oomv2.New(publisher)
	} else {
		ep, err = oomv1.New(publisher)
	}
	if err != nil {
		return nil, fmt.Errorf("OOM watcher: %w", err)
	}
	go ep.Run(ctx)
	if hwbreak.Broken() {
		log.G(ctx).Warn("hardware breakpoints do not fire on this host: CRIU runs with CRIU_FAULT=130 (stops tasks on a system call instead of a breakpoint; without it every dump would hang)")
	}
	s := &service{
		context:              ctx,
		events:               make(chan any, 128),
		ec:                   reaper.Default.Subscribe(),
		oom:                  ep,
		publisher:            publisher,
		shutdown:             sd,
		containers:           make(map[string]*runctask.Container),
		running:              make(map[int][]containerProcess),
		runningExecs:         make(map[*runctask.Container]int),
		execCountSubscribers: make(map[*runctask.Container]chan<- int),
		containerInitExit:    make(map[*runctask.Container]runcC.Exit),
		exitSubscribers:      make(map[*map[int][]runcC.Exit]struct{}),
		warm:                 newWarm(grpcAddress),
		makers:               make(map[string]*maker),
		stdio:                make(map[string]stdio.Stdio),
		recover:              make(map[string]*recoverable),
		healthReady:          make(map[string]chan struct{}),
		outputs:              make(map[process.Process]*outputDrain),
		candidateExits:       make(map[*runctask.Container]runcC.Exit),
		exitTimes:            make(map[string]time.Time),
	}
	sd.RegisterCallback(func(ctx context.Context) error { return s.warm.close(ctx) })
	s.warm.onIdle = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.idleLocked() {
			s.shutdown.Shutdown()
		}
	}
	go s.processExits()
	s.monitor = &monitor{inner: reaper.Default, w: s.warm}
	s.warm.abort = s.monitor.abort
	runcC.Monitor = s.monitor
	p, err := runctask.NewPlatform()
	if err != nil {
		return nil, fmt.Errorf("console platform: %w", err)
	}
	s.platform = p
	sd.RegisterCallback(func(context.Context) error { return p.Close() })
	s.forward(ctx, publisher)
	if address, err := shim.ReadAddress("address"); err == nil {
		sd.RegisterCallback(func(context.Context) error { return shim.RemoveSocket(address) })
	}
	s.bootPools(ctx)
	return s, nil
}

type service struct {
	mu sync.Mutex

	context   context.Context
	events    chan any
	platform  stdio.Platform
	ec        chan runcC.Exit
	oom       oom.Watcher
	publisher events.Publisher
	shutdown  shutdown.Service

	containers map[string]*runctask.Container // guarded by mu
	creating   int                            // Creates in progress, not in containers yet; guarded by mu
	makers     map[string]*maker              // containers that make a template once started; guarded by mu
	// stdio holds containerd's FIFOs of containers whose process got others; guarded by mu
	stdio   map[string]stdio.Stdio
	recover map[string]*recoverable // containers that opted in to crash recovery; guarded by mu
	// healthReady is closed when a restored task's stdout health text appears; guarded by mu
	healthReady map[string]chan struct{}
	// outputs: processes whose exit waits for their output to drain; guarded by mu
	outputs map[process.Process]*outputDrain
	// candidateExits: exits of tasks a recovery restored and had not installed yet;
	// guarded by mu
	candidateExits map[*runctask.Container]runcC.Exit
	// exitTimes: when each process that exited did, by "container/exec" ("container/"
	// for the init): the exit is reported later (once its output drained, or after a
	// recovery failed), and the process package dates it then; guarded by mu
	exitTimes map[string]time.Time
	warm      *warm
	monitor   *monitor // go-runc's process monitor (runc commands of this shim)

	lifecycleMu sync.Mutex
	// running maps a pid to the processes the service started with it; guarded by lifecycleMu.
	running map[int][]containerProcess
	// runningExecs counts each container's running execs; guarded by lifecycleMu.
	runningExecs map[*runctask.Container]int
	// execCountSubscribers get the new exec count of a container whose init exited
	// while execs ran; guarded by lifecycleMu.
	execCountSubscribers map[*runctask.Container]chan<- int
	// containerInitExit holds the init's exit of containers whose init exited; guarded by lifecycleMu.
	containerInitExit map[*runctask.Container]runcC.Exit
	// exitSubscribers collect exits while a process starts, so an exit that races the
	// start is not lost; guarded by lifecycleMu.
	exitSubscribers map[*map[int][]runcC.Exit]struct{}
}

type containerProcess struct {
	Container *runctask.Container
	Process   process.Process
}

// preStart subscribes to exits before a process starts. handleStarted then either
// records the process as running or, if it already exited, handles that exit. The
// caller holds lifecycleMu.
func (s *service) preStart(c *runctask.Container) (handleStarted func(*runctask.Container, process.Process), cleanup func()) {
	exits := make(map[int][]runcC.Exit)
	s.exitSubscribers[&exits] = struct{}{}

	if c != nil {
		// The init's pid from Create is replaced by the one Start reports (restore).
		pid := c.Pid()
		var keep []containerProcess
		for _, cp := range s.running[pid] {
			if cp.Container != c {
				keep = append(keep, cp)
			}
		}
		if len(keep) > 0 {
			s.running[pid] = keep
		} else {
			delete(s.running, pid)
		}
	}

	handleStarted = func(c *runctask.Container, p process.Process) {
		var pid int
		if p != nil {
			pid = p.Pid()
		}
		s.lifecycleMu.Lock()
		ees, exited := exits[pid]
		delete(s.exitSubscribers, &exits)
		exits = nil
		if pid == 0 || exited {
			s.lifecycleMu.Unlock()
			for _, ee := range ees {
				if ip, ok := p.(*process.Init); ok && s.candidateExited(ee, c, ip) {
					continue
				}
				s.afterOutput(c.ID, p, func() { s.handleProcessExit(ee, c, p) })
			}
		} else {
			s.running[pid] = append(s.running[pid], containerProcess{Container: c, Process: p})
			s.lifecycleMu.Unlock()
		}
	}
	cleanup = func() {
		if exits != nil {
			s.lifecycleMu.Lock()
			defer s.lifecycleMu.Unlock()
			delete(s.exitSubscribers, &exits)
		}
	}
	return handleStarted, cleanup
}

// Create a new container: cold, or from a template (adopting a pooled sandbox, or
// restoring the template's checkpoint), or cold and making a template once ready.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, err error) {
	began := time.Now()
	// Until it is in s.containers (or failed), the shim must not exit under it (a
	// Shutdown after another container's Delete, an import's end).
	s.mu.Lock()
	s.creating++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.creating--
		s.mu.Unlock()
	}()
	topts, err := parseOptions(r.Options)
	if err != nil {
		// Bad configuration: nothing was created yet, so nothing leaks.
		return nil, errgrpc.ToGRPC(fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err))
	}
	applyConfig(topts)
	// A plain container needs only the annotations; the whole spec is read (a
	// measurable cost in a fresh shim) only for templates and recovery.
	sf, err := oci.OpenSpec(r.Bundle)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	ann := group.Scope(sf.Annotations) // a pod's: those meant for this container
	// What a cold start gets, should a warm one fail.
	cold := proto.Clone(r).(*taskAPI.CreateTaskRequest)
	coldRunc := proto.Clone(topts.runc).(*options.Options)
	pol, err := recovery.FromAnnotations(topts.cfg.Recovery, ann)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err))
	}
	var spec *specs.Spec
	if pol.Enabled || ann[AnnTemplate] != "" {
		if spec, err = sf.Spec(); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		spec.Annotations = ann
	}
	var relay *stdinRelay
	if pol.Enabled && r.Stdin != "" && !r.Terminal {
		var path string
		if relay, path, err = newStdinRelay(ctx, r.Stdin, r.Bundle); err != nil {
			return nil, errgrpc.ToGRPC(fmt.Errorf("stdin relay: %w", err))
		}
		r.Stdin = path
		defer func() {
			if err != nil {
				relay.close()
			}
		}()
	}
	// Exits are collected from here on, before plan takes a pooled sandbox (whose process
	// then stops being the pool's): an exit of it in between reaches handleStarted.
	s.lifecycleMu.Lock()
	handleStarted, cleanup := s.preStart(nil)
	s.lifecycleMu.Unlock()
	defer cleanup()

	var mk *maker
	if ann[AnnTemplate] == "" && ann[AnnReady] != "" {
		log.G(ctx).WithField("container", r.ID).Warnf("annotation %s has no effect without %s=NAME: no template is made", AnnReady, AnnTemplate)
	}
	tPlan := time.Now()
	if ann[AnnTemplate] != "" {
		if ann[AnnReady] != "" {
			mk, err = s.warm.prepareMaker(ctx, r, spec, &topts)
		} else {
			err = s.warm.plan(ctx, r, spec, &topts)
		}
		if err != nil {
			return nil, errgrpc.ToGRPC(fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err))
		}
	}
	if r.Options, err = typeurl.MarshalAnyToProto(topts.runc); err != nil {
		s.warm.unplan(ctx, r.ID)
		return nil, errgrpc.ToGRPC(err)
	}

	tNew := time.Now()
	dPlan := tNew.Sub(tPlan)
	container, err := runctask.NewContainer(ctx, s.platform, r)
	dNew := time.Since(tNew)
	if err != nil && s.warm.isHit(r.ID) {
		// Adoption failed: the sandbox is destroyed and the container starts cold.
		log.G(ctx).WithError(err).WithField("container", r.ID).Warn("pooled sandbox could not be adopted; starting cold")
		s.warm.unplan(ctx, r.ID)
		s.warm.missed(spec, "adoption failed")
		r = cold
		if r.Options, err = typeurl.MarshalAnyToProto(coldRunc); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		container, err = runctask.NewContainer(ctx, s.platform, r)
	}
	if err != nil {
		s.warm.unplan(ctx, r.ID)
		if mk != nil {
			mk.abandon()
		}
		return nil, err
	}
	var rec *recoverable
	if pol.Enabled {
		var rerr error
		if rec, rerr = s.prepareRecovery(ctx, cold, spec, pol, topts, relay); rerr != nil {
			log.G(ctx).WithError(rerr).WithField("container", r.ID).Warn("crash recovery not enabled")
		}
	}
	s.mu.Lock()
	s.containers[r.ID] = container
	if mk != nil {
		s.makers[r.ID] = mk
	}
	// State reports containerd's FIFOs, not those warm put between them and the process
	// (a stdout readiness tee, a stdin relay): a client reattaches to what it is told.
	// (A recovered container's restored process may get a health tee later.)
	if r.Stdin != cold.Stdin || r.Stdout != cold.Stdout || r.Stderr != cold.Stderr || pol.Enabled {
		s.stdio[r.ID] = stdio.Stdio{Stdin: cold.Stdin, Stdout: cold.Stdout, Stderr: cold.Stderr, Terminal: cold.Terminal}
	}
	if rec != nil {
		s.recover[r.ID] = rec
	}
	s.mu.Unlock()
	if rec != nil && rec.relay != nil {
		rec.relay.setPid(container.Pid())
	}

	s.send(&eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      cold.Rootfs,
		IO: &eventstypes.TaskIO{
			Stdin:    cold.Stdin,
			Stdout:   cold.Stdout,
			Stderr:   cold.Stderr,
			Terminal: cold.Terminal,
		},
		Checkpoint: cold.Checkpoint,
		Pid:        uint32(container.Pid()),
	})
	tOOM := time.Now()
	s.watchOOM(ctx, container)
	dOOM := time.Since(tOOM)

	proc, _ := container.Process("")
	if proc != nil {
		s.watchOutput(container, proc)
	}
	handleStarted(container, proc)
	s.warm.createdIn(r.ID, time.Since(began))
	if log.GetLevel() >= log.DebugLevel { // the fields cost a hit's Create otherwise
		log.G(ctx).WithField("container", r.ID).WithField("took", time.Since(began)).
			WithField("prepare", tPlan.Sub(began)).WithField("plan", dPlan).WithField("runc_create", dNew).WithField("oom_watch", dOOM).Debug("created")
	}
	return &taskAPI.CreateTaskResponse{Pid: uint32(container.Pid())}, nil
}

// applyConfig makes the parts of the configuration that are process-wide take effect.
func applyConfig(o taskOptions) {
	usePath(o.cfg.Criu)
	if o.cfg.LogLevel != "info" {
		if lvl, err := logrus.ParseLevel(o.cfg.LogLevel); err == nil && lvl > logrus.GetLevel() {
			logrus.SetLevel(lvl)
		}
	}
}

func (s *service) watchOOM(ctx context.Context, c *runctask.Container) {
	switch cg := c.Cgroup().(type) {
	case nil:
		// Restores get their cgroup at Start.
		return
	case *cgroupsv2.Manager:
		all, err := cg.RootControllers()
		if err == nil {
			err = cg.ToggleControllers(all, cgroupsv2.Enable)
		}
		if err != nil {
			if userns.RunningInUserNS() {
				log.G(ctx).WithError(err).Debug("failed to enable controllers")
			} else {
				log.G(ctx).WithError(err).Error("failed to enable controllers")
			}
		}
		if err := s.oom.Add(c.ID, cg); err != nil {
			log.G(ctx).WithError(err).WithField("container_id", c.ID).Error("failed to watch OOM events")
		}
	case cgroup1.Cgroup:
		if err := s.oom.Add(c.ID, cg); err != nil {
			log.G(ctx).WithError(err).WithField("container_id", c.ID).Error("failed to watch OOM events")
		}
	}
}

// RegisterTTRPC registers the task service with the shim's TTRPC server.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// Start a process.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	began := time.Now()
	container, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	if r.ExecID != "" {
		if err := s.execBeforeStart(ctx, container); err != nil {
			return nil, err
		}
	}
	var cinit *runctask.Container
	s.lifecycleMu.Lock()
	if r.ExecID == "" {
		cinit = container
	} else {
		if _, initExited := s.containerInitExit[container]; initExited {
			s.lifecycleMu.Unlock()
			return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "container %s init process is not running", container.ID)
		}
		s.runningExecs[container]++
	}
	handleStarted, cleanup := s.preStart(cinit)
	s.lifecycleMu.Unlock()
	defer cleanup()

	hadCgroup := container.Cgroup() != nil
	if r.ExecID == "" && !hadCgroup {
		// An init created from a checkpoint (restore on create, containerd's restore)
		// has no process, so no cgroup, until runc restores it now: a CRIU that hangs
		// is killed after checkpoint_timeout. A cold start or a pool hit arms nothing.
		defer s.warm.watchRestore(ctx, container.ID, 0).Stop()
	}
	p, err := container.Start(ctx, r)
	if err != nil {
		if r.ExecID != "" {
			s.lifecycleMu.Lock()
			s.runningExecs[container]--
			if ch, ok := s.execCountSubscribers[container]; ok {
				ch <- s.runningExecs[container]
			}
			s.lifecycleMu.Unlock()
		}
		if r.ExecID != "" {
			s.takeExecOutput(container, r.ExecID).Close()
		}
		handleStarted(container, p)
		return nil, errgrpc.ToGRPC(err)
	}
	// An exec, or an init restored at Start (a cold one's is watched since Create).
	s.watchOutput(container, p)
	if r.ExecID == "" {
		if !hadCgroup {
			// A restored init has its cgroup only now.
			if cg, err := loadProcessCgroup(p.Pid()); err == nil {
				container.CgroupSet(cg)
				s.watchOOM(ctx, container)
			} else {
				log.G(ctx).WithError(err).Warn("load cgroup of restored container")
			}
		}
		s.send(&eventstypes.TaskStart{ContainerID: container.ID, Pid: uint32(p.Pid())})
		s.mu.Lock()
		mk := s.makers[container.ID]
		delete(s.makers, container.ID)
		s.mu.Unlock()
		if mk != nil {
			go s.warm.watchMaker(mk, container)
		}
		if rec := s.recoverableOf(container.ID); rec != nil {
			s.startCheckpoints(rec)
		}
	} else {
		s.send(&eventstypes.TaskExecStarted{ContainerID: container.ID, ExecID: r.ExecID, Pid: uint32(p.Pid())})
	}
	handleStarted(container, p)
	if r.ExecID == "" {
		s.warm.startedIn(r.ID, time.Since(began))
	}
	return &taskAPI.StartResponse{Pid: uint32(p.Pid())}, nil
}

func loadProcessCgroup(pid int) (any, error) {
	if cgroups.Mode() == cgroups.Unified {
		g, err := cgroupsv2.PidGroupPath(pid)
		if err != nil {
			return nil, err
		}
		return cgroupsv2.Load(g)
	}
	return cgroup1.Load(cgroup1.PidPath(pid))
}

// Delete the initial process and container, or an exec.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	container, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	if r.ExecID == "" {
		// A Delete during a recovery wins: the recovery is abandoned first.
		s.killedByContainerd(r.ID, 0, true)
		if s.waitRecovered(ctx, r.ID, container) {
			if container, err = s.getContainer(r.ID); err != nil {
				return nil, err
			}
		}
	}
	release := func() {}
	if r.ExecID == "" {
		// A periodic checkpoint in progress holds the task's cgroup frozen (and the task
		// may already be dead: a frozen task still dies of SIGKILL): runc refuses to
		// delete a frozen container. The checkpoint ends as soon as the task is dead.
		release = s.holdDump(r.ID)
	}
	p, err := container.Delete(ctx, r)
	release()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.dropOutput(p)
	exitedAt := s.exitedAt(container.ID, p)
	s.forgetExitTimes(container.ID, r.ExecID)
	if r.ExecID == "" {
		s.mu.Lock()
		delete(s.containers, r.ID)
		delete(s.makers, r.ID)
		delete(s.stdio, r.ID)
		s.mu.Unlock()
		s.forgetRecovery(r.ID)
		s.warm.deleted(ctx, r.ID)
		s.send(&eventstypes.TaskDelete{
			ContainerID: container.ID,
			Pid:         uint32(p.Pid()),
			ExitStatus:  uint32(p.ExitStatus()),
			ExitedAt:    protobuf.ToTimestamp(exitedAt),
		})
		s.lifecycleMu.Lock()
		delete(s.containerInitExit, container)
		s.lifecycleMu.Unlock()
	}
	return &taskAPI.DeleteResponse{
		ExitStatus: uint32(p.ExitStatus()),
		ExitedAt:   protobuf.ToTimestamp(exitedAt),
		Pid:        uint32(p.Pid()),
	}, nil
}

// Exec an additional process inside the container.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	container, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	ok, cancel := container.ReserveProcess(r.ExecID)
	if !ok {
		return nil, errgrpc.ToGRPCf(errdefs.ErrAlreadyExists, "id %s", r.ExecID)
	}
	p, err := container.Exec(ctx, r)
	if err != nil {
		cancel()
		return nil, errgrpc.ToGRPC(err)
	}
	s.send(&eventstypes.TaskExecAdded{ContainerID: container.ID, ExecID: p.ID()})
	return empty, nil
}

// execBeforeStart refuses an exec into a container served from a pool that was created
// and not started, with an error that says why: its application is frozen until Start,
// and runc would refuse the exec as into a paused container. A cold container accepts
// one (its process is still runc init); a sandbox cannot, without thawing the
// application before its Start.
func (s *service) execBeforeStart(ctx context.Context, c *runctask.Container) error {
	if !s.warm.isHit(c.ID) {
		return nil
	}
	p, err := c.Process("")
	if err != nil {
		return nil
	}
	if st, _ := p.Status(ctx); st != "created" {
		return nil
	}
	return errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition,
		"container %s was served from a warm pool and is not started yet: its application stays frozen until Start, so exec after starting it (a cold container accepts an exec before Start; see docs/pool.md)", c.ID)
}

// ResizePty of a process.
func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	container, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	if err := container.ResizePty(ctx, r); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return empty, nil
}

// State returns runtime state information for a process.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	container, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	p, err := container.Process(r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	st, err := p.Status(ctx)
	if err != nil {
		return nil, err
	}
	sio := p.Stdio()
	if r.ExecID == "" {
		s.mu.Lock()
		if o, ok := s.stdio[r.ID]; ok {
			sio = o
		}
		s.mu.Unlock()
	}
	return &taskAPI.StateResponse{
		ID:         p.ID(),
		Bundle:     container.Bundle,
		Pid:        uint32(p.Pid()),
		Status:     statusOf(st),
		Stdin:      sio.Stdin,
		Stdout:     sio.Stdout,
		Stderr:     sio.Stderr,
		Terminal:   sio.Terminal,
		ExitStatus: uint32(p.ExitStatus()),
		ExitedAt:   protobuf.ToTimestamp(s.exitedAt(r.ID, p)),
	}, nil
}

func statusOf(st string) task.Status {
	switch st {
	case "created":
		return task.Status_CREATED
	case "running":
		return task.Status_RUNNING
	case "stopped":
		return task.Status_STOPPED
	case "paused":
		return task.Status_PAUSED
	case "pausing":
		return task.Status_PAUSING
	}
	return task.Status_UNKNOWN
}

// Pause the container.
func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	container, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	defer s.holdDump(r.ID)()
	if err := container.Pause(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.send(&eventstypes.TaskPaused{ContainerID: container.ID})
	return empty, nil
}

// Resume the container.
func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	container, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	defer s.holdDump(r.ID)()
	if err := container.Resume(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.send(&eventstypes.TaskResumed{ContainerID: container.ID})
	return empty, nil
}

// Kill a process with the provided signal.
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	container, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	if r.ExecID == "" {
		// The exit that follows is containerd's doing: not recovered.
		s.killedByContainerd(r.ID, r.Signal, false)
	}
	if err := container.Kill(ctx, r); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return empty, nil
}

// Pids returns all pids inside the container.
func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	container, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	ip, err := container.Process("")
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	pids, err := ip.(*process.Init).Runtime().Ps(ctx, container.ID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	execs := container.ExecdProcesses()
	processes := make([]*task.ProcessInfo, 0, len(pids))
	for _, pid := range pids {
		info := &task.ProcessInfo{Pid: uint32(pid)}
		for _, p := range execs {
			if p.Pid() == pid {
				a, err := typeurl.MarshalAnyToProto(&options.ProcessDetails{ExecID: p.ID()})
				if err != nil {
					return nil, fmt.Errorf("marshal process %d info: %w", pid, err)
				}
				info.Info = a
				break
			}
		}
		processes = append(processes, info)
	}
	return &taskAPI.PidsResponse{Processes: processes}, nil
}

// CloseIO of a process.
func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	container, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	if rec := s.recoverableOf(r.ID); rec != nil && rec.relay != nil && r.ExecID == "" {
		rec.relay.closeStdin()
	}
	if err := container.CloseIO(ctx, r); err != nil {
		return nil, err
	}
	return empty, nil
}

// Checkpoint the container.
func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	container, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	var copts options.CheckpointOptions
	if r.Options != nil {
		_ = typeurl.UnmarshalTo(r.Options, &copts)
	}
	if copts.Exit {
		// A checkpoint that ends the task is containerd's doing: not recovered.
		s.killedByContainerd(r.ID, 0, true)
	}
	// Not beside a periodic checkpoint (two CRIU dumps of one task fail), whose
	// failure would also thaw the task under this one.
	defer s.holdDump(r.ID)()
	if err := checkpoint(ctx, container, r); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.saveCheckpoint(r.ID, checkpointImagePath(r))
	return empty, nil
}

// Update a running container's resources.
func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	container, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	if err := container.Update(ctx, r); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return empty, nil
}

// Wait for a process to exit.
func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	container, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	p, err := container.Process(r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if err := p.Wait(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	// A recovered init goes on as a restored task: wait on that one.
	for r.ExecID == "" && s.waitRecovered(ctx, r.ID, container) {
		if container, err = s.getContainer(r.ID); err != nil {
			return nil, err
		}
		if p, err = container.Process(""); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		if err := p.Wait(ctx); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
	}
	return &taskAPI.WaitResponse{
		ExitStatus: uint32(p.ExitStatus()),
		ExitedAt:   protobuf.ToTimestamp(s.exitedAt(r.ID, p)),
	}, nil
}

// Connect returns the shim's pid and the task's.
func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	var pid int
	if container, err := s.getContainer(r.ID); err == nil {
		pid = container.Pid()
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: uint32(pid)}, nil
}

// idleLocked reports whether the shim has nothing to stay up for: no container, no
// Create in progress, no pool or import (holdsPools). Called with mu.
func (s *service) idleLocked() bool {
	return len(s.containers) == 0 && s.creating == 0 && !s.warm.holdsPools()
}

// Shutdown stops the shim once it serves no container and has nothing else to stay up
// for (idleLocked: a Create in progress, a pool, an import being retried).
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A shim shared by a group stays while any container remains, and a pool shim
	// while it holds a pool.
	if !s.idleLocked() {
		return empty, nil
	}
	s.shutdown.Shutdown()
	return empty, nil
}

// Stats returns the container's cgroup metrics as cgroups v3 types.
func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	container, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	var stats any
	switch cg := container.Cgroup().(type) {
	case nil:
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "cgroup does not exist")
	case cgroup1.Cgroup:
		if stats, err = cg.Stat(cgroup1.IgnoreNotExist); err != nil {
			return nil, err
		}
	case *cgroupsv2.Manager:
		if stats, err = cg.Stat(); err != nil {
			return nil, err
		}
	default:
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "unsupported cgroup type %T", cg)
	}
	data, err := typeurl.MarshalAny(stats)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: typeurl.MarshalProto(data)}, nil
}

func (s *service) processExits() {
	for e := range s.ec {
		s.warm.exited(e.Pid)
		// Runtimes fork and exit processes we do not track; only exits of processes
		// the service started are handled.
		s.lifecycleMu.Lock()
		for subscriber := range s.exitSubscribers {
			(*subscriber)[e.Pid] = append((*subscriber)[e.Pid], e)
		}
		var cps []containerProcess
		for _, cp := range s.running[e.Pid] {
			if _, init := cp.Process.(*process.Init); init {
				s.containerInitExit[cp.Container] = e
			}
			cps = append(cps, cp)
		}
		delete(s.running, e.Pid)
		s.lifecycleMu.Unlock()

		for _, cp := range cps {
			if ip, ok := cp.Process.(*process.Init); ok {
				s.handleInitExit(e, cp.Container, ip)
			} else {
				s.afterOutput(cp.Container.ID, cp.Process, func() { s.handleProcessExit(e, cp.Container, cp.Process) })
			}
		}
	}
}

func (s *service) send(evt any) {
	select {
	case s.events <- evt:
	case <-s.shutdown.Done():
	}
}

// handleInitExit recovers the task if it may be, else publishes its exit once its output
// drained (afterOutput).
func (s *service) handleInitExit(e runcC.Exit, c *runctask.Container, p *process.Init) {
	if s.candidateExited(e, c, p) {
		return
	}
	if runctask.ShouldKillAllOnExit(s.context, c.Bundle) {
		if err := p.KillAll(s.context); err != nil {
			log.G(s.context).WithError(err).WithField("id", p.ID()).Error("failed to kill init's children")
		}
	}
	if s.tryRecover(e, c, p) {
		// No TaskExit: the task is being restored. If that fails, the original exit
		// is published then.
		s.dropOutput(p)
		return
	}
	s.afterOutput(c.ID, p, func() { s.publishInitExit(e, c, p) })
}

// candidateExited handles the exit of an init whose container is not the service's
// current one for its id: a task a recovery restored and is still checking (or
// discarding). The recovery deals with its death; recovering it or publishing its exit
// would run a second recovery beside the first (seen: a Delete then stopped that one's
// restore and left CRIU's mount and the cgroups behind) and report the task's exit again.
func (s *service) candidateExited(e runcC.Exit, c *runctask.Container, p *process.Init) bool {
	s.mu.Lock()
	current := s.containers[c.ID] == c
	if !current {
		// Kept until the recovery installs the task (then its exit is handled as any)
		// or drops it (forgetCandidate).
		s.candidateExits[c] = e
	}
	s.mu.Unlock()
	if current {
		return false
	}
	p.SetExited(e.Status)
	s.dropOutput(p)
	s.lifecycleMu.Lock()
	delete(s.containerInitExit, c)
	s.lifecycleMu.Unlock()
	log.G(s.context).WithField("container", c.ID).WithField("pid", e.Pid).Debug("a restored task under check exited")
	return true
}

// forgetCandidate drops what candidateExited kept for c and returns it.
func (s *service) forgetCandidate(c *runctask.Container) (runcC.Exit, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.candidateExits[c]
	delete(s.candidateExits, c)
	return e, ok
}

// publishInitExit publishes the init's exit only after every exec of the container has
// exited: containerd requires exec exits before the init's.
func (s *service) publishInitExit(e runcC.Exit, c *runctask.Container, p *process.Init) {
	s.lifecycleMu.Lock()
	numRunningExecs := s.runningExecs[c]
	if numRunningExecs == 0 {
		delete(s.runningExecs, c)
		s.lifecycleMu.Unlock()
		s.handleProcessExit(e, c, p)
		return
	}
	events := make(chan int, numRunningExecs)
	s.execCountSubscribers[c] = events
	s.lifecycleMu.Unlock()

	go func() {
		defer func() {
			s.lifecycleMu.Lock()
			defer s.lifecycleMu.Unlock()
			delete(s.execCountSubscribers, c)
			delete(s.runningExecs, c)
		}()
		for n := range events {
			if n == 0 {
				break
			}
		}
		s.handleProcessExit(e, c, p)
	}()
}

// exitKey names process p of container id in exitTimes.
func exitKey(id string, p process.Process, isInit bool) string {
	if isInit {
		return id + "/"
	}
	return id + "/" + p.ID()
}

// exitedAt is when process p of container id exited: the time of its reap, where the
// shim reported the exit (the process package's own date is that of the report).
func (s *service) exitedAt(id string, p process.Process) time.Time {
	reported := p.ExitedAt()
	if reported.IsZero() {
		return reported // not exited, or its exit not reported yet
	}
	_, isInit := p.(*process.Init)
	s.mu.Lock()
	t, ok := s.exitTimes[exitKey(id, p, isInit)]
	s.mu.Unlock()
	if ok {
		return t
	}
	return reported
}

// forgetExitTimes drops what exitTimes holds for container id (all of it when exec is
// "" and the init is deleted, else the exec's).
func (s *service) forgetExitTimes(id, exec string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if exec != "" {
		delete(s.exitTimes, id+"/"+exec)
		return
	}
	for k := range s.exitTimes {
		if strings.HasPrefix(k, id+"/") {
			delete(s.exitTimes, k)
		}
	}
}

func (s *service) handleProcessExit(e runcC.Exit, c *runctask.Container, p process.Process) {
	_, isInit := p.(*process.Init)
	// The time of the exit (the reap), not of this report: kept before SetExited, which
	// ends the Waits that read it.
	if e.Timestamp.IsZero() {
		e.Timestamp = time.Now()
	}
	if isInit {
		e.Status = s.warm.exitStatus(c.ID, e.Pid, e.Status)
	}
	s.mu.Lock()
	s.exitTimes[exitKey(c.ID, p, isInit)] = e.Timestamp
	s.mu.Unlock()
	p.SetExited(e.Status)
	if isInit {
		// The exit is final: the client may see the end of the output.
		defer s.releaseHolders(c.ID)
		if err := runctask.WriteExitStatus(c.Bundle, e); err != nil {
			log.G(s.context).WithField("container_id", c.ID).WithError(err).Error("failed to store exit status in bundle")
		}
	}
	s.send(&eventstypes.TaskExit{
		ContainerID: c.ID,
		ID:          p.ID(),
		Pid:         uint32(e.Pid),
		ExitStatus:  uint32(e.Status),
		ExitedAt:    protobuf.ToTimestamp(e.Timestamp),
	})
	if !isInit {
		s.lifecycleMu.Lock()
		s.runningExecs[c]--
		if ch, ok := s.execCountSubscribers[c]; ok {
			ch <- s.runningExecs[c]
		}
		s.lifecycleMu.Unlock()
	}
}

// forward publishes the shim's events in order until the shim shuts down. The shutdown
// waits (as one of its callbacks) for the events sent before it to be published: the
// shim library exits as soon as the callbacks are done, and containerd calls Shutdown
// right after a Delete, so an event still queued then (the TaskDelete) would be lost.
func (s *service) forward(ctx context.Context, publisher shim.Publisher) {
	stop, drained := make(chan struct{}), make(chan struct{})
	s.shutdown.RegisterCallback(func(ctx context.Context) error {
		close(stop)
		select {
		case <-drained:
		case <-ctx.Done():
		}
		return nil
	})
	go func() {
		defer close(drained)
		defer publisher.Close()
		ctx := context.WithoutCancel(ctx)
		publish := func(e any) {
			if err := publisher.Publish(ctx, runtime.GetTopic(e), e); err != nil {
				log.G(ctx).WithError(err).Error("post event")
			}
		}
		for {
			select {
			case e := <-s.events:
				publish(e)
			case <-stop:
				for {
					select {
					case e := <-s.events:
						publish(e)
					default:
						return
					}
				}
			}
		}
	}()
}

func (s *service) getContainer(id string) (*runctask.Container, error) {
	s.mu.Lock()
	c := s.containers[id]
	s.mu.Unlock()
	if c == nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "container not created")
	}
	return c, nil
}
