package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	runcC "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/internal/procfs"
	"github.com/warmshim/warm/internal/runctask"
	"github.com/warmshim/warm/oci"
	"github.com/warmshim/warm/recovery"
	"github.com/warmshim/warm/store"
)

// recoverable is a container that opted in to crash recovery.
type recoverable struct {
	id, bundle string
	policy     recovery.Policy
	cps        *recovery.Checkpoints
	stdin      string
	stdout     string
	stderr     string
	spec       *specs.Spec

	mu         sync.Mutex
	loop       recovery.CrashLoop // guarded by mu
	killed     bool               // containerd's Kill or Delete ended the init (recovery.Ends); guarded by mu
	asked      time.Time          // containerd's latest Kill with a signal the init handles; guarded by mu
	ending     bool               // containerd's SIGKILL, Delete or checkpoint --exit: no periodic checkpoint starts; guarded by mu
	recovering chan struct{}      // closed when the current recovery ends; guarded by mu
	recovered  int                // guarded by mu
	remounted  bool               // the bundle's rootfs was mounted for a restore; guarded by mu
	holders    []*os.File         // extra writers keeping containerd's FIFOs open; guarded by mu
	relay      *stdinRelay        // the task's stdin, when it has one
	stop       chan struct{}      // ends the periodic checkpoints
	// dumpMu is held while a periodic checkpoint runs: deleting the container waits for
	// it, so a dump never recreates a removed checkpoint directory.
	dumpMu sync.Mutex
	pauses []time.Duration // task pause per periodic checkpoint; guarded by mu
	// status is what `warmctl recovery ls` reads (noteStatus); guarded by mu, and its
	// file's writes by statusMu.
	status     recovery.Status
	statusMu   sync.Mutex
	statusDone bool // the container is being deleted: no more writes; guarded by statusMu

	cfg config.Config // the shim configuration at Create
	ns  string
	// standbyMu serializes the standby's refreshes, adoption and removal.
	standbyMu sync.Mutex
	standby   *standby // guarded by standbyMu
	standbyN  int64    // standbys made, for their ids; guarded by standbyMu
}

// prepareRecovery, for a container that opted in (pol, from its annotations), opens
// its checkpoint store and keeps containerd's output FIFOs open, so an attached client
// keeps reading across a restore.
func (s *service) prepareRecovery(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec, pol recovery.Policy, topts taskOptions, relay *stdinRelay) (*recoverable, error) {
	if r.Terminal {
		return nil, fmt.Errorf("annotation %s: a container with a tty cannot be recovered (CRIU restores no terminal); run it without -t", recovery.AnnRecovery)
	}
	ns, _ := namespaces.Namespace(ctx)
	cps, err := recovery.OpenCheckpoints(filepath.Join(topts.cfg.StateDir, "checkpoints", ns, r.ID), store.ReaderOf(spec))
	if err != nil {
		return nil, err
	}
	rec := &recoverable{id: r.ID, bundle: r.Bundle, policy: pol, cps: cps, stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, spec: spec, stop: make(chan struct{}), relay: relay,
		cfg: topts.cfg, ns: ns, status: initialStatus(r.ID, pol)}
	go s.noteStatus(rec, nil) // not on the Create's path
	for _, p := range []string{r.Stdout, r.Stderr} {
		if p == "" {
			continue
		}
		// containerd's client holds the read end, so a non-blocking open succeeds.
		if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			rec.holders = append(rec.holders, f)
		}
	}
	return rec, nil
}

func (s *service) recoverableOf(id string) *recoverable {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recover[id]
}

// errEndedDuringCheckpoint: a periodic checkpoint failed because its task died, or
// containerd killed it, while CRIU ran.
var errEndedDuringCheckpoint = errors.New("the task ended during the checkpoint")

// startCheckpoints takes periodic checkpoints of a started container.
func (s *service) startCheckpoints(rec *recoverable) {
	if rec.policy.Interval <= 0 {
		return
	}
	go func() {
		t := time.NewTicker(rec.policy.Interval)
		defer t.Stop()
		for {
			select {
			case <-rec.stop:
				return
			case <-t.C:
				err := s.periodicCheckpoint(rec)
				switch {
				case errors.Is(err, errEndedDuringCheckpoint):
					log.G(s.context).WithError(err).WithField("container", rec.id).Info("periodic checkpoint stopped: the task died or was killed during it; the previous checkpoint stays the latest")
				case err != nil:
					log.G(s.context).WithError(err).WithField("container", rec.id).Warn("periodic checkpoint failed; the task keeps running and the previous checkpoint stays valid")
					s.noteCheckpoint(rec, 0, err)
				}
			}
		}
	}()
}

// preFreezeLimit bounds how long a periodic checkpoint keeps the task frozen before CRIU
// takes over.
const preFreezeLimit = 5 * time.Second

// periodicCheckpoint dumps the running task (leaving it running) into the container's
// checkpoint store: with incremental dumps, a pre-dump first copies memory while the task
// runs, and the dump proper (the task's pause) only writes what changed since.
func (s *service) periodicCheckpoint(rec *recoverable) error {
	c, err := s.getContainer(rec.id)
	if err != nil {
		return nil
	}
	p, err := c.Process("")
	if err != nil {
		return nil
	}
	ip := p.(*process.Init)
	rec.dumpMu.Lock()
	defer rec.dumpMu.Unlock()
	// Under dumpMu: a Pause that came first has the task paused, and it stays so.
	if st, _ := ip.Status(s.context); st != "running" {
		return nil
	}
	select {
	case <-rec.stop:
		return nil // the container is being deleted
	default:
	}
	rec.mu.Lock()
	ending, stopping := rec.ending, rec.askedToEnd(time.Now())
	rec.mu.Unlock()
	if ending {
		return nil // containerd ends the task: its Kill may be waiting for dumpMu
	}
	if stopping {
		// A task asked to stop (a signal it handles, within kill_grace) may be on its
		// way out: its state is not one to restore later.
		return nil
	}
	ctx := ownDumpContext(s.context, rec.cfg)
	// CRIU can hang (seen on a task that died during a dump): past checkpoint_timeout,
	// the runc checkpoint and CRIU under it are killed and this checkpoint fails.
	var timedOut atomic.Bool
	defer s.abortAfterTimeout(rec, "checkpoint", &timedOut).Stop()
	// A task killed while CRIU holds it (ptrace) is a zombie that only CRIU is told
	// about: its exit reaches the shim when CRIU gives up, after its own 10 s timeout.
	// Watch the init while the dump runs, and stop CRIU as soon as the task is dead.
	dumping := make(chan struct{})
	defer close(dumping)
	go s.watchDumpedTask(rec, ip.Pid(), dumping)
	var pause, frozen, took time.Duration
	var prefrozen bool // the shim froze the task, not CRIU
	cp, err := rec.cps.Commit(func(images string) error {
		work := filepath.Join(filepath.Dir(images), "work")
		defer os.RemoveAll(work)
		opts := &runcC.CheckpointOpts{ImagePath: images, WorkDir: work}
		rec.mu.Lock()
		incremental := rec.policy.Incremental
		rec.mu.Unlock()
		if incremental {
			pre := filepath.Join(filepath.Dir(images), "pre")
			err := ip.Runtime().Checkpoint(ctx, rec.id, &runcC.CheckpointOpts{ImagePath: pre, WorkDir: work}, runcC.PreDump)
			switch {
			case err != nil && strings.Contains(err.Error(), "MemTrack"):
				// The kernel cannot track dirty memory: full dumps from now on.
				log.G(s.context).WithField("container", rec.id).Info("CRIU reports no memory tracking on this kernel: incremental checkpoints off")
				rec.mu.Lock()
				rec.policy.Incremental = false
				rec.mu.Unlock()
				os.RemoveAll(pre)
			case err != nil:
				return fmt.Errorf("pre-dump: %w (CRIU: %s)", err, oci.CriuErrors(filepath.Join(work, "pre-dump.log")))
			default:
				opts.ParentPath = "../pre"
			}
		}
		// The task's pause: from freezing it here to thawing it after the dump. Should
		// the freeze not settle, CRIU freezes it (and its stats give the pause).
		// Thawing early is harmless (CRIU holds the tasks it seized by ptrace, and
		// freezes them itself if it finds them thawed): runc and CRIU slower to start
		// than preFreezeLimit do not keep the task frozen until checkpoint_timeout.
		start := time.Now()
		thaw, ferr := oci.FreezeContainer(ip.Runtime().Root, rec.id)
		// Frozen by someone else already (a runc pause outside containerd): not the
		// shim's to thaw, whatever happens.
		frozenBefore := ferr == nil && thaw == nil
		var thawOnce func()
		if ferr != nil {
			log.G(s.context).WithError(ferr).WithField("container", rec.id).Debug("pre-freeze failed; CRIU freezes the task")
		} else if thaw != nil {
			thawOnce = sync.OnceFunc(func() {
				if terr := thaw(); terr != nil {
					log.G(s.context).WithError(terr).WithField("container", rec.id).Warn("thaw after checkpoint")
				}
			})
			defer time.AfterFunc(preFreezeLimit, thawOnce).Stop()
		}
		err := ip.Runtime().Checkpoint(ctx, rec.id, opts, runcC.LeaveRunning)
		if thawOnce != nil {
			thawOnce()
			prefrozen = true
		}
		if err != nil && !frozenBefore {
			// CRIU freezes the task itself when it finds it thawed, and one that failed
			// on a dying task (or was stopped) can leave the cgroup frozen (seen on
			// cgroup v2): runc's kill of the container then waits 10 s for the freeze
			// to settle. The task was running when the checkpoint began, and a Pause
			// waits for dumpMu: it runs again.
			thawAfterFailedDump(log.G(s.context).WithField("container", rec.id), ip.Runtime().Root, rec.id)
		}
		took = time.Since(start)
		if err != nil && timedOut.Load() {
			return fmt.Errorf("checkpoint killed after checkpoint_timeout (%v): %w", rec.policy.CheckpointTimeout, err)
		}
		if err != nil {
			return fmt.Errorf("%w (CRIU: %s)", err, oci.CriuErrors(filepath.Join(work, "dump.log")))
		}
		// Without a pre-freeze, the pause is CRIU's own account (freezing, then keeping
		// the task frozen); without that file, the whole checkpoint call bounds it.
		pause = took
		if st, err := oci.ReadDumpStats(work); err == nil {
			frozen = st.Frozen
			if thawOnce == nil {
				pause = st.Pause()
			}
		} else {
			log.G(s.context).WithError(err).WithField("container", rec.id).Debug("CRIU dump stats")
		}
		return nil
	})
	if err != nil {
		rec.mu.Lock()
		ending = rec.ending
		rec.mu.Unlock()
		if ending || procfs.Dying(ip.Pid()) {
			return fmt.Errorf("%w: %w", errEndedDuringCheckpoint, err)
		}
		return err
	}
	rec.mu.Lock()
	rec.pauses = append(rec.pauses, pause)
	if len(rec.pauses) > 256 {
		rec.pauses = rec.pauses[1:]
	}
	rec.mu.Unlock()
	rec.cps.Prune(rec.policy.Keep)
	log.G(s.context).WithField("container", rec.id).WithField("pause", pause).WithField("frozen", frozen).
		WithField("took", took).WithField("prefrozen", prefrozen).Info("periodic checkpoint")
	s.noteCheckpoint(rec, pause, nil)
	if rec.policy.Standby {
		go s.refreshStandby(rec, cp)
	}
	return nil
}

// abortAfterTimeout kills the container's runc SUB (checkpoint or restore) and the CRIU
// under it if it still runs after checkpoint_timeout, and then sets timedOut (if given).
// Stop the returned timer once the command returned.
func (s *service) abortAfterTimeout(rec *recoverable, sub string, timedOut *atomic.Bool) *time.Timer {
	timeout := checkpointTimeout(rec.policy.CheckpointTimeout)
	return abortAfter(s.warm.abort, timeout, sub, rec.id, func() {
		if timedOut != nil {
			timedOut.Store(true)
		}
		log.G(s.context).WithField("container", rec.id).WithField("checkpoint_timeout", timeout).
			Warn(sub + " ran past checkpoint_timeout: runc and CRIU killed")
	})
}

// killedByContainerd marks that containerd's Kill (with signal sig) or Delete (deleting,
// or a checkpoint with exit) reached a container's init. What the signal does to the
// init decides (recovery.SignalEffect, from the init's signal state): one that ends it
// (SIGKILL, Delete, a signal it takes by default) takes recovery away from the exit that
// follows and abandons a recovery in progress; one it handles makes an exit within
// kill_grace the end asked for (a graceful stop) and a later one a crash (it reloaded);
// one that cannot end it (ignored, dropped by a namespace's init, 0) marks nothing.
func (s *service) killedByContainerd(id string, sig uint32, deleting bool) {
	signal := syscall.Signal(sig)
	if !deleting && recovery.CannotEnd(signal) {
		return
	}
	rec := s.recoverableOf(id)
	if rec == nil {
		return
	}
	effect := recovery.Ends
	if !deleting {
		effect = s.signalEffect(id, signal)
	}
	rec.mu.Lock()
	switch effect {
	case recovery.NoEffect:
		rec.mu.Unlock()
		return
	case recovery.Handled:
		rec.asked = time.Now()
		until := rec.asked.Add(rec.policy.KillGrace)
		rec.mu.Unlock()
		s.noteStatus(rec, func(st *recovery.Status) { st.State, st.StoppingUntil = recovery.StateStopping, &until })
		log.G(s.context).WithField("container", id).WithField("signal", unix.SignalName(signal)).
			WithField("kill_grace", rec.policy.KillGrace).
			Debug("the task handles containerd's signal: an exit within kill_grace is not recovered")
		return
	}
	rec.killed = true
	rec.ending = rec.ending || deleting || sig == uint32(unix.SIGKILL)
	rec.mu.Unlock()
	s.noteStatus(rec, func(st *recovery.Status) { st.State, st.StoppingUntil = recovery.StateEnding, nil })
	if s.monitor != nil && s.monitor.abortRestore(id) {
		log.G(s.context).WithField("container", id).Info("a restore in progress was stopped: containerd killed or deleted the task")
	}
	// A SIGKILL during a checkpoint stops it, and waits for it to end (the checkpoint
	// thaws the task it froze, under dumpMu, so that a Pause waiting for it is not
	// undone): runc's kill of a container whose cgroup v2 is frozen waits for the freeze
	// to settle, which a task killed while CRIU holds it never lets happen (runc then
	// waits 10 s).
	if sig == uint32(unix.SIGKILL) && s.monitor != nil && s.monitor.abortCheckpoint(id) {
		began := time.Now()
		rec.dumpMu.Lock()
		rec.dumpMu.Unlock() //nolint:staticcheck // waits for the checkpoint's end
		log.G(s.context).WithField("container", id).WithField("waited", time.Since(began)).Info("a checkpoint in progress was stopped: containerd killed the task")
	}
}

// signalEffect reads what sig would do to the container's init now. An init that is dead,
// being recovered or unreadable is taken to end by it.
func (s *service) signalEffect(id string, sig syscall.Signal) recovery.Effect {
	c, err := s.getContainer(id)
	if err != nil {
		return recovery.Ends
	}
	p, err := c.Process("")
	if err != nil || p.Pid() <= 0 {
		return recovery.Ends
	}
	st, err := procfs.ReadSignals(p.Pid())
	if err != nil || st.Zombie {
		return recovery.Ends
	}
	effect := recovery.SignalEffect(sig, st)
	if log.GetLevel() >= log.DebugLevel {
		// What decided: a signal the task was thought to handle and did not (or the
		// reverse) is read from here.
		log.G(s.context).WithField("container", id).WithField("pid", p.Pid()).WithField("signal", unix.SignalName(sig)).
			WithField("effect", effect).WithField("comm", st.Name).WithField("ns_pid", st.NamespacePid).
			WithField("caught", fmt.Sprintf("%#x", st.Caught)).WithField("ignored", fmt.Sprintf("%#x", st.Ignored)).
			WithField("blocked", fmt.Sprintf("%#x", st.Blocked)).WithField("pending", fmt.Sprintf("%#x", st.Pending)).
			Debug("containerd's signal to a recoverable task: the task's signal state")
	}
	if effect == recovery.NoEffect && !recovery.CannotEnd(sig) && !recovery.NonTerminating(sig) &&
		s.monitor != nil && s.monitor.checkpointing(id) {
		// CRIU holds the task (seized, its parasite inside): what its signal state
		// says now is not trusted to be what the task does with the signal. Taken as
		// handled: an exit within kill_grace is not recovered.
		effect = recovery.Handled
	}
	return effect
}

// askedToEnd reports whether containerd asked the task to end: a Kill or Delete that ends
// it, or a signal it handles sent less than kill_grace ago. Called with rec.mu.
func (rec *recoverable) askedToEnd(now time.Time) bool {
	return rec.killed || (!rec.asked.IsZero() && now.Sub(rec.asked) < rec.policy.KillGrace)
}

// tryRecover decides, for an init that exited, whether to restore it. It returns true
// when a recovery started (the exit is not published unless it fails).
func (s *service) tryRecover(e runcC.Exit, c *runctask.Container, p *process.Init) bool {
	rec := s.recoverableOf(c.ID)
	if rec == nil {
		return false
	}
	rec.mu.Lock()
	killed := rec.askedToEnd(time.Now())
	if !recovery.Abnormal(e.Status, killed) {
		rec.mu.Unlock()
		s.noteStatus(rec, func(st *recovery.Status) { st.State, st.StoppingUntil = recovery.StateExited, nil })
		return false
	}
	if !rec.loop.Allow(time.Now(), rec.policy.CrashLoopMax, rec.policy.CrashLoopWindow) {
		rec.mu.Unlock()
		log.G(s.context).WithField("container", c.ID).Warn("crash loop: recovery stopped; reporting the exit")
		s.noteCrash(rec, e.Timestamp, e.Status, fmt.Sprintf("reported: crash loop (more than crash_loop_max %d recoveries within %v)", rec.policy.CrashLoopMax, rec.policy.CrashLoopWindow), recovery.StateExited)
		return false
	}
	if len(rec.cps.List()) == 0 {
		rec.mu.Unlock()
		log.G(s.context).WithField("container", c.ID).Warn("no checkpoint to recover from; reporting the exit")
		s.noteCrash(rec, e.Timestamp, e.Status, "reported: no checkpoint to recover from", recovery.StateExited)
		return false
	}
	done := make(chan struct{})
	rec.recovering = done
	rec.mu.Unlock()
	detected := time.Now()
	s.noteCrash(rec, e.Timestamp, e.Status, "recovering", recovery.StateRecovering)
	go func() {
		defer close(done)
		err := s.recoverTask(rec, c, p, e, detected)
		if err != nil {
			log.G(s.context).WithError(err).WithField("container", c.ID).Error("recovery failed; reporting the original exit")
			s.noteRecoveryFailed(rec, err)
			s.handleProcessExit(e, c, p)
		}
	}()
	return true
}

var errAbandoned = errors.New("recovery abandoned: containerd killed or deleted the task")

// recoverTask restores the latest valid checkpoint into the same container id, bundle,
// cgroup and namespaces, with stdio on the same FIFOs, checks its health, and retries
// with backoff, falling back to older checkpoints when one cannot be restored.
func (s *service) recoverTask(rec *recoverable, old *runctask.Container, oldInit *process.Init, e runcC.Exit, detected time.Time) error {
	// Not cancelled by a Kill: killing runc in the middle of a CRIU restore leaves CRIU's
	// mounts behind. A Kill is honoured between the steps instead.
	ctx := log.WithLogger(s.context, log.G(s.context).WithField("container", rec.id))
	// Waiters on the dead init learn of the exit now; Wait sees the recovery and goes on
	// waiting on the restored task.
	oldInit.SetExited(e.Status)
	cands := rec.cps.List()
	idx, backoff := 0, rec.policy.Backoff
	var lastErr error
	// A standby restored from the newest checkpoint is adopted instead of a restore.
	st := s.takeStandby(rec, cands)
	for attempt := 0; attempt < rec.policy.MaxRetries && idx < len(cands); attempt++ {
		rec.mu.Lock()
		killed := rec.killed
		rec.mu.Unlock()
		if killed {
			return errAbandoned
		}
		if attempt > 0 {
			time.Sleep(backoff)
			backoff *= 2
		}
		cp := cands[idx]
		var newC *runctask.Container
		var err error
		fromStandby := st != nil
		if fromStandby {
			if newC, err = s.restoreFrom(ctx, rec, old, oldInit, cp, st); err != nil {
				log.G(ctx).WithError(err).Warn("recovery standby could not be adopted; restoring the checkpoint")
				s.warm.unplan(ctx, rec.id)
				fromStandby = false
			}
			st = nil
		}
		if !fromStandby {
			newC, err = s.restoreFrom(ctx, rec, old, oldInit, cp, nil)
		}
		if err != nil {
			log.G(ctx).WithError(err).WithField("checkpoint", cp.Dir).Warn("restore failed; trying the previous checkpoint")
			lastErr = err
			idx++
			continue
		}
		if err := s.healthy(ctx, rec, newC); err != nil {
			log.G(ctx).WithError(err).Warn("restored task unhealthy; retrying")
			lastErr = err
			s.discard(ctx, newC)
			continue
		}
		rec.mu.Lock()
		killed = rec.killed
		if !killed {
			rec.recovered++
		}
		rec.mu.Unlock()
		if killed {
			s.discard(ctx, newC)
			return errAbandoned
		}
		s.mu.Lock()
		s.containers[rec.id] = newC
		s.mu.Unlock()
		// Noted before a death since the health check is handled (a crash after it).
		s.noteRecovered(rec, cp, time.Since(e.Timestamp), fromStandby)
		died, dead := s.forgetCandidate(newC)
		s.lifecycleMu.Lock()
		delete(s.containerInitExit, old)
		delete(s.runningExecs, old)
		s.lifecycleMu.Unlock()
		if dead {
			// It died between its health check and now: its exit is handled now that
			// it is the container's task (recovered again, or published).
			if ip, err := newC.Process(""); err == nil {
				go s.handleInitExit(died, newC, ip.(*process.Init))
			}
		}
		log.G(ctx).WithField("checkpoint", filepath.Base(cp.Dir)).WithField("detection", detected.Sub(e.Timestamp)).
			WithField("serving_after", time.Since(e.Timestamp)).WithField("pid", newC.Pid()).WithField("standby", fromStandby).Info("task recovered")
		return nil
	}
	if lastErr == nil {
		lastErr = errors.New("no checkpoint could be tried")
	}
	return fmt.Errorf("gave up after %d attempts: %w", rec.policy.MaxRetries, lastErr)
}

// restoreFrom replaces the dead container in runc by a restore of cp, through the same
// runc packages as any container, and starts it.
// With a standby (restored from cp ahead of time), the new container adopts it instead:
// runc create and start of the container are the standby's adoption and thaw.
func (s *service) restoreFrom(ctx context.Context, rec *recoverable, old *runctask.Container, oldInit *process.Init, cp *recovery.Checkpoint, st *standby) (*runctask.Container, error) {
	release := rec.cps.Use(cp)
	defer release()
	began := time.Now()
	// A periodic checkpoint still running (it ends as soon as it sees the task dead)
	// finishes first: it may hold the cgroup frozen, and thaws it when it ends.
	s.holdDump(rec.id)()
	// The dead container's runc state goes; its rootfs stays mounted for the restore.
	if err := oci.DeleteContainer(ctx, oldInit.Runtime(), rec.id); err != nil && !strings.Contains(err.Error(), "not exist") {
		log.G(ctx).WithError(err).Debug("runc delete of the dead container")
	}
	deleted := time.Since(began)
	if err := s.ensureRootfs(rec); err != nil {
		return nil, err
	}
	ropts, err := runctask.ReadOptions(rec.bundle)
	if err != nil || ropts == nil {
		return nil, fmt.Errorf("runc options of %s: %v", rec.id, err)
	}
	opts, err := typeurl.MarshalAnyToProto(ropts)
	if err != nil {
		return nil, err
	}
	req := &taskAPI.CreateTaskRequest{ID: rec.id, Bundle: rec.bundle, Stdin: rec.stdin, Stdout: rec.stdout, Stderr: rec.stderr,
		Checkpoint: cp.Images, Options: opts}
	if st != nil {
		wrapper, err := s.serveStandby(ctx, rec, st)
		if err != nil {
			return nil, err
		}
		ropts.BinaryName = wrapper
		if req.Options, err = typeurl.MarshalAnyToProto(ropts); err != nil {
			return nil, err
		}
		req.Checkpoint = ""
	}
	if rec.relay != nil {
		// The dead task's stdin copier gets EOF; the restored one reads a FIFO of its own.
		path, err := rec.relay.next()
		if err != nil {
			return nil, err
		}
		req.Stdin = path
	}
	var ready chan struct{}
	var tee io.Closer
	if rec.policy.Health.Kind == "stdout" {
		ready = make(chan struct{})
		path := filepath.Join(rec.bundle, fmt.Sprintf("warm-health-%d", time.Now().UnixNano()))
		var err error
		if tee, err = startTee(path, rec.stdout, []byte(rec.policy.Health.Arg), ready); err != nil {
			return nil, err
		}
		req.Stdout = path
	}
	s.lifecycleMu.Lock()
	handleStarted, cleanup := s.preStart(nil)
	s.lifecycleMu.Unlock()
	defer cleanup()
	prepared := time.Since(began)
	newC, err := runctask.NewContainer(ctx, s.platform, req)
	if err != nil {
		if tee != nil {
			tee.Close() // no process will write to it
		}
		return nil, err
	}
	created := time.Since(began)
	// CRIU can hang on a restore too (seen: one waited an hour on a restored task that
	// containerd's Delete had killed mid-restore, and the Delete waited with it): past
	// checkpoint_timeout runc and CRIU are killed and this attempt fails; a Kill or
	// Delete from containerd kills them at once (killedByContainerd).
	watchdog := s.abortAfterTimeout(rec, "restore", nil)
	p, err := newC.Start(ctx, &taskAPI.StartRequest{ID: rec.id})
	watchdog.Stop()
	if err != nil {
		handleStarted(newC, p)
		s.forgetCandidate(newC)
		return nil, fmt.Errorf("restore: %w", err)
	}
	by := "restore"
	if st != nil {
		by = "standby"
	}
	log.G(ctx).WithField("delete", deleted).WithField("prepare", prepared-deleted).WithField("create", created-prepared).
		WithField("start", time.Since(began)-created).WithField("by", by).Debug("restored")
	if cg, err := loadProcessCgroup(p.Pid()); err == nil {
		newC.CgroupSet(cg)
		s.watchOOM(ctx, newC)
	}
	s.watchOutput(newC, p)
	handleStarted(newC, p)
	if rec.relay != nil {
		rec.relay.setPid(p.Pid())
	}
	if ready != nil {
		s.mu.Lock()
		s.healthReady[rec.id] = ready
		s.mu.Unlock()
	}
	return newC, nil
}

// ensureRootfs makes sure the bundle's rootfs is the container's root filesystem for a
// restore. A cold container's is still mounted; a container served from a pool runs on
// its sandbox's snapshot, which is bound there for the restore.
func (s *service) ensureRootfs(rec *recoverable) error {
	rootfs := filepath.Join(rec.bundle, "rootfs")
	if ok, _ := procfs.IsMountPoint(rootfs); ok {
		return nil
	}
	src := s.warm.sandboxRootfs(rec.id)
	if src == "" {
		return fmt.Errorf("rootfs of %s is not mounted", rec.id)
	}
	if err := os.MkdirAll(rootfs, 0o711); err != nil {
		return err
	}
	if err := mount.All([]mount.Mount{{Type: "bind", Source: src, Options: []string{"rbind", "rw"}}}, rootfs); err != nil {
		return err
	}
	rec.mu.Lock()
	rec.remounted = true
	rec.mu.Unlock()
	return nil
}

// healthy runs the container's health check on a restored task.
func (s *service) healthy(ctx context.Context, rec *recoverable, c *runctask.Container) error {
	pid := c.Pid()
	deadline := time.Now().Add(rec.policy.HealthTimeout)
	alive := func() bool { return syscall.Kill(pid, 0) == nil && !procfs.Dead(pid) }
	h := rec.policy.Health
	switch h.Kind {
	case "":
		// The process is alive a moment after the restore.
		time.Sleep(20 * time.Millisecond)
		if !alive() {
			return errors.New("restored process exited")
		}
		return nil
	case "file":
		for time.Now().Before(deadline) {
			if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid), "root", h.Arg)); err == nil {
				return nil
			}
			rec.mu.Lock()
			killed := rec.killed
			rec.mu.Unlock()
			if killed {
				return errAbandoned
			}
			if !alive() {
				return errors.New("restored process exited")
			}
			time.Sleep(10 * time.Millisecond)
		}
		return fmt.Errorf("health file %s did not appear within %v", h.Arg, rec.policy.HealthTimeout)
	case "stdout":
		s.mu.Lock()
		ready := s.healthReady[rec.id]
		delete(s.healthReady, rec.id)
		s.mu.Unlock()
		select {
		case <-ready:
			return nil
		case <-time.After(time.Until(deadline)):
			return fmt.Errorf("no output line containing %q within %v", h.Arg, rec.policy.HealthTimeout)
		}
	case "exec":
		hctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		p, _ := c.Process("")
		proc := specs.Process{Args: []string{"sh", "-c", h.Arg}, Cwd: "/"}
		if rec.spec != nil && rec.spec.Process != nil {
			proc.Env, proc.User, proc.Cwd = rec.spec.Process.Env, rec.spec.Process.User, rec.spec.Process.Cwd
		}
		if err := p.(*process.Init).Runtime().Exec(hctx, rec.id, proc, &runcC.ExecOpts{Detach: false}); err != nil {
			return fmt.Errorf("health command %q: %w", h.Arg, err)
		}
		return nil
	}
	return fmt.Errorf("unknown health check %q", h.Kind)
}

// discard kills and removes a restored container that will not be kept.
func (s *service) discard(ctx context.Context, c *runctask.Container) {
	p, err := c.Process("")
	if err != nil {
		return
	}
	_ = p.Kill(ctx, uint32(syscall.SIGKILL), true)
	for i := 0; i < 200; i++ {
		if st, _ := p.Status(ctx); st == "stopped" {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = oci.DeleteContainer(ctx, p.(*process.Init).Runtime(), c.ID)
	s.forgetCandidate(c)
}

// waitRecovered blocks while a recovery of the container runs and reports whether the
// container was replaced by a restored one (Wait then waits on it).
func (s *service) waitRecovered(ctx context.Context, id string, c *runctask.Container) bool {
	rec := s.recoverableOf(id)
	if rec == nil {
		return false
	}
	rec.mu.Lock()
	ch := rec.recovering
	rec.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case <-ch:
	case <-ctx.Done():
		return false
	}
	cur, err := s.getContainer(id)
	return err == nil && cur != c
}

// holdDump waits for a periodic checkpoint of the container in progress and keeps the
// next from starting until the returned func is called: a Pause or Resume must not be
// undone by the checkpoint's own freeze and thaw.
func (s *service) holdDump(id string) (release func()) {
	s.mu.Lock()
	rec := s.recover[id]
	s.mu.Unlock()
	if rec == nil {
		return func() {}
	}
	rec.dumpMu.Lock()
	return rec.dumpMu.Unlock
}

// forgetRecovery is called when containerd deletes the container: checkpoints, FIFO
// holders and any mount made for a restore go.
func (s *service) forgetRecovery(id string) {
	s.mu.Lock()
	rec := s.recover[id]
	delete(s.recover, id)
	s.mu.Unlock()
	if rec == nil {
		return
	}
	close(rec.stop)
	rec.dumpMu.Lock() // a checkpoint in progress finishes first
	rec.dumpMu.Unlock()
	s.dropStandby(rec)
	if rec.relay != nil {
		rec.relay.close()
	}
	rec.mu.Lock()
	for _, f := range rec.holders {
		f.Close()
	}
	rec.holders = nil
	recovered := rec.recovered
	rec.mu.Unlock()
	// A restored container runs on the rootfs mounted for the first one (or bound for a
	// restore): nobody else unmounts it.
	if recovered > 0 || rec.remounted {
		_ = mount.UnmountAll(filepath.Join(rec.bundle, "rootfs"), 0)
	}
	// A status write racing the removal could leave the directory behind.
	rec.statusMu.Lock()
	rec.statusDone = true
	rec.statusMu.Unlock()
	_ = rec.cps.Remove()
	if recovered > 0 {
		log.G(s.context).WithField("container", id).WithField("recoveries", recovered).Info("recovered container deleted")
	}
}

// releaseHolders closes the extra FIFO writers once the task's exit is final, so the
// attached client sees the end of the output.
func (s *service) releaseHolders(id string) {
	if rec := s.recoverableOf(id); rec != nil {
		rec.mu.Lock()
		for _, f := range rec.holders {
			f.Close()
		}
		rec.holders = nil
		rec.mu.Unlock()
	}
}

// saveCheckpoint keeps a copy of a checkpoint containerd asked for (the Checkpoint RPC)
// as the container's latest, when it opted in to recovery.
func (s *service) saveCheckpoint(id, images string) {
	rec := s.recoverableOf(id)
	if rec == nil {
		return
	}
	if _, err := rec.cps.Commit(func(dst string) error {
		if err := copyTree(images, dst); err != nil {
			return err
		}
		// The copy records warm's network lock, as the periodic checkpoints do: a
		// recovery restores it with that (containerd's own image keeps CRIU's).
		_, err := store.SetNetworkLock(dst, rec.cfg.CriuNetworkLock)
		return err
	}); err != nil {
		log.G(s.context).WithError(err).WithField("container", id).Warn("keeping the checkpoint for recovery")
		return
	}
	rec.cps.Prune(rec.policy.Keep)
}

func copyTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case fi.IsDir():
			return os.MkdirAll(target, 0o700)
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		default:
			return oci.CopyFile(target, p, 0o600)
		}
	})
}

// watchDumpedTask polls the init's state while a periodic checkpoint runs (until done
// closes) and aborts the checkpoint once the init is dead.
func (s *service) watchDumpedTask(rec *recoverable, pid int, done <-chan struct{}) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if !procfs.Dying(pid) {
				continue
			}
			if s.monitor != nil && s.monitor.abortCheckpoint(rec.id) {
				log.G(s.context).WithField("container", rec.id).Info("the task died during a checkpoint: CRIU stopped")
			}
			return
		}
	}
}
