package shim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/internal/logfile"
	"github.com/warmshim/warm/internal/pagecache"
	"github.com/warmshim/warm/internal/refillgate"
	"github.com/warmshim/warm/oci"
	"github.com/warmshim/warm/oci/wrap"
	"github.com/warmshim/warm/pool"
	"github.com/warmshim/warm/store"
)

// warm is the part of the task service that serves containers from templates: the
// template store, the pools, and the adoption of pooled sandboxes. It starts the first
// time a container names a template.
type warm struct {
	grpcAddress string
	// poolShim: this process is the namespace's pool shim (group PoolGroup). Another
	// shim given a template container (a pod's, or a group's) holds no pool: it makes
	// templates and restores them on create, from the store they share.
	poolShim bool

	// abort kills the runc command sub of container id in flight and every process
	// under it (CRIU), reporting whether there was one: the service's process monitor.
	// Set once before the service takes requests.
	abort func(sub, id string) bool

	mu        sync.Mutex
	ready     bool                     // guarded by mu
	ns        string                   // guarded by mu
	cfg       config.Config            // guarded by mu
	self      string                   // this binary, the runc of adopted containers; guarded by mu
	runc      string                   // the real runc; guarded by mu
	runcName  string                   // the configured runc that runc was found from; guarded by mu
	dynmods   *dynmodsKeeper           // keeps favordynmods on (cgroup_favordynmods); guarded by mu
	store     *store.Store             // guarded by mu
	sandboxes *oci.Sandboxes           // guarded by mu
	gate      *refillgate.Gate         // pauses refills while hits are served; guarded by mu
	rootfs    *snapshotRootfs          // guarded by mu
	pools     map[string]*pool.Pool    // template name -> pool; guarded by mu
	frozen    map[int]frozenRef        // pid of a pooled sandbox -> its pool; guarded by mu
	served    map[string]*served       // container id -> how it was served; guarded by mu
	listener  *net.UnixListener        // adoption socket; guarded by mu
	ctl       *ctlServer               // guarded by mu
	importing map[string]chan struct{} // templates being imported from images -> wakes the import; guarded by mu
	// syncedImages is the set of [pools.NAME] images last synced; guarded by mu
	syncedImages string
	// cfgPath is the file cfg came from ("" for a runtime option's ConfigBody), which
	// the pool shim watches; cfgSeen is what the file was when last read, cfgPending a
	// change seen once (taken when it holds still until the next look). Guarded by mu.
	cfgPath    string
	cfgSeen    config.Version
	cfgPending config.Version
	// stopping: an operator shut the pool shim down (warmctl shutdown); imports end and
	// no longer hold it up. Guarded by mu.
	stopping bool
	// ksmChecked: a pool asked for ksm and what stops it was logged (ksmFor). Guarded by mu.
	ksmChecked bool
	// importFn replaces importImage in tests (nil: importImage).
	importFn func(ctx context.Context, st *store.Store, ns, name, ref string) (*store.Template, error)
	// onIdle is called after an operator drained every pool, and when an import ends:
	// the service exits if no container remains and nothing else holds it (holdsPools).
	onIdle func()
}

type frozenRef struct {
	pool *pool.Pool
	id   string
	sb   *oci.Sandbox
}

// served is a container created from a template.
type served struct {
	pool    *pool.Pool
	sb      *pool.Sandbox // a hit: the adopted sandbox
	bundle  string
	spec    *specs.Spec
	rebind  []specs.Mount // network files adoption binds over the template's
	release func()        // a restore-on-create: the template generation it reads
	create  time.Duration // a hit: the shim's Create time, until Start adds its own
	unpause func()        // a hit: ends its pause of the refills (at Start, or if it fails)
	// A recovery standby (pool nil): the Sandboxes that restored it and destroy it.
	sandboxes *oci.Sandboxes
	// opMu serialises the runc commands handleOp carries out on the sandbox with its
	// release: a Create that fails (its runc killed by a cancelled context) must not
	// destroy the sandbox while its adoption still runs.
	opMu sync.Mutex
	gone bool // released: handleOp adopts nothing more; guarded by opMu
	// endedBy is the first signal of a kill that ended the sandbox before its Start
	// (0: none): the exit it causes is reported as a cold container's would be
	// (oci.UnstartedExitStatus). Set before the kill, read by the exit's report.
	endedBy atomic.Int32
}

// sandboxesOf returns the Sandboxes that adopt and thaw s's sandbox.
func (w *warm) sandboxesOf(s *served) *oci.Sandboxes {
	if s.sandboxes != nil {
		return s.sandboxes
	}
	return w.sandboxes
}

// EnvPoolShim is set by the start action for the process it starts as the namespace's
// pool shim.
const EnvPoolShim = "WARM_POOL_SHIM"

func newWarm(grpcAddress string) *warm {
	poolShim := os.Getenv(EnvPoolShim) == "1"
	os.Unsetenv(EnvPoolShim) // not for runc, CRIU or hooks
	return &warm{grpcAddress: grpcAddress, poolShim: poolShim, pools: map[string]*pool.Pool{}, frozen: map[int]frozenRef{}, served: map[string]*served{}, importing: map[string]chan struct{}{}}
}

// runcRoot is the runc --root the process package uses for a namespace.
func runcRoot(cfg config.Config, ns string) string {
	root := cfg.RuncRoot
	if root == "" {
		root = process.RuncRoot
	}
	return filepath.Join(root, ns)
}

// start sets warm up for a namespace (once per shim: pools live in the namespace's
// pool shim) with the configuration o.cfg, read from o.cfgPath ("" for a ConfigBody).
// Later calls (each Create that names a template) bring the configuration up to date.
func (w *warm) start(ctx context.Context, o taskOptions, ns string) error {
	cfg := o.cfg
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ready {
		if w.ns != ns {
			return fmt.Errorf("warm pools of namespace %s are served by another shim than %s's", ns, w.ns)
		}
		w.cfg, _ = keepStartKeys(w.cfg, cfg)
		// The version this Create read is the one in force: if the watcher had taken a
		// newer one, it takes that again at its next look.
		w.cfgPath, w.cfgSeen, w.cfgPending = o.cfgPath, o.cfgVersion, config.Version{}
		// Only a change of the configured checkpoint images means work: a Create must
		// not pay for containerd round trips.
		if imagesOf(cfg) != w.syncedImages {
			w.syncedImages = imagesOf(cfg)
			go w.syncImageTemplates(ctx)
		}
		return nil
	}
	self, realRunc, err := runtimePaths(cfg)
	if err != nil {
		return err
	}
	st, err := store.New(filepath.Join(cfg.StateDir, "templates"))
	if err != nil {
		return err
	}
	w.rootfs = &snapshotRootfs{address: w.grpcAddress, ns: ns}
	if !w.poolShim {
		// A pod's or a group's shim: no pool, socket or log of the pool shim's (which
		// may run beside it).
		w.ns, w.cfg, w.self, w.runc, w.runcName, w.store, w.ready = ns, cfg, self, realRunc, cfg.Runc, st, true
		w.cfgPath, w.cfgSeen = o.cfgPath, o.cfgVersion
		return nil
	}
	run := filepath.Join(cfg.RunDir, ns)
	if err := os.MkdirAll(run, 0o700); err != nil {
		return err
	}
	// Its sockets are root's: a directory left looser than MkdirAll makes it is made
	// root-only again.
	if err := os.Chmod(run, 0o700); err != nil {
		return err
	}
	// containerd's shim library collects garbage at 40% growth to keep every shim small;
	// the pool shim is one per namespace and serves hits while its refills allocate
	// (about 3 collections a second under `go run ./test/cmd/bench -apps python`, one per
	// 3 hits), and a collection running beside a hit costs it latency. At 400% growth:
	// shim-side hit p99 25.5, 22.1, 24.9 ms against 38.9, 30.2, 27.6 at 100% (three
	// alternating pairs of that bench on a 2-core machine; p50 unchanged), for a pool
	// shim of 36 MB resident instead of 24.
	debug.SetGCPercent(400)
	// The pool shim outlives the container whose bundle FIFO carries its log: it keeps
	// a log file of its own.
	if h, err := logfile.Open(filepath.Join(run, "pool-shim.log"), 8<<20); err != nil {
		log.G(ctx).WithError(err).Warn("pool shim log file")
	} else {
		logrus.AddHook(h)
		log.G(ctx).WithField("pid", os.Getpid()).Info("pool shim logging to " + h.Path)
	}
	if checkDynmods(ctx, cfg, hostCgroupMounts{}) && cfg.CgroupFavorDynmods {
		w.dynmods = newDynmodsKeeper(hostCgroupMounts{})
		go w.dynmods.run(context.WithoutCancel(ctx), dynmodsInterval)
	}
	if cfg.RefillPause {
		w.gate = refillgate.New(0, 0, func(id string, err error) {
			log.L.WithError(err).WithField("sandbox", id).Warn("pause of a refill during a hit")
		})
	}
	// The restores of a pool with ksm = true run through this binary (its Go wrapper
	// knows wrap.FlagMemoryMerge, the C warm-runc does not).
	goWrapper, err := os.Executable()
	if err != nil {
		return err
	}
	w.sandboxes = &oci.Sandboxes{
		Runc: realRunc, Root: runcRoot(cfg, ns),
		Dir:          filepath.Join(run, "sandboxes"),
		CgroupParent: "/warm-pool/" + ns,
		Rootfs:       w.rootfs,
		Gate:         w.gate,
		MergeRunc:    goWrapper,
		Merge:        w.ksmFor,
		Images:       pagecache.NewKeeper(),
	}
	if err := os.MkdirAll(w.sandboxes.Dir, 0o700); err != nil {
		return err
	}
	w.sandboxes.Cleanup(ctx)
	sock := filepath.Join(run, "adopt-"+strconv.Itoa(os.Getpid())+".sock")
	_ = os.Remove(sock)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return fmt.Errorf("adoption socket: %w", err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		l.Close()
		return err
	}
	// The wrapper runs as a child of runc's caller (this process): it finds the
	// socket and the real runc in its environment.
	os.Setenv(wrap.EnvSocket, sock)
	os.Setenv(wrap.EnvRunc, realRunc)
	w.listener = l
	go w.serveAdoptions(l)
	w.ns, w.cfg, w.self, w.runc, w.runcName, w.store, w.ready = ns, cfg, self, realRunc, cfg.Runc, st, true
	w.cfgPath, w.cfgSeen = o.cfgPath, o.cfgVersion
	ctl, err := startCtl(filepath.Join(run, "ctl.sock"), w)
	if err != nil {
		log.G(ctx).WithError(err).Warn("warm control socket")
	}
	w.ctl = ctl
	tmpls, bad, err := st.ListAll(ns)
	if err != nil {
		return err
	}
	// Leases of templates deleted while no pool shim ran go; those of the ones read here
	// are made again as they are (KeepTemplate).
	current := map[string]int64{}
	for _, t := range tmpls {
		w.poolLocked(t)
		current[t.Name] = t.Generation
	}
	for _, b := range bad {
		log.G(ctx).WithError(b.Err).WithField("template", b.Name).Error("template cannot be read: not served (`warmctl template rm " + b.Name + "` removes it)")
		current[b.Name] = -1 // its leases stay until it is removed
	}
	go func(rootfs *snapshotRootfs) {
		if err := rootfs.SweepTemplateLeases(context.Background(), current); err != nil {
			log.L.WithError(err).Warn("leases of deleted templates")
		}
	}(w.rootfs)
	log.G(ctx).WithField("namespace", ns).WithField("templates", len(tmpls)).Info("warm pools started")
	w.syncedImages = imagesOf(cfg)
	go w.syncImageTemplates(ctx)
	go w.resyncImages(context.WithoutCancel(ctx), imageResync)
	go w.watchConfig(context.WithoutCancel(ctx), configPoll)
	return nil
}

// poolLocked returns the pool of t's name, creating it or moving it to t's generation.
func (w *warm) poolLocked(t *store.Template) *pool.Pool {
	if !w.poolShim || w.sandboxes == nil {
		return nil // a pod's or group's shim restores on create only
	}
	w.keepTemplateSnapshot(t)
	if p, ok := w.pools[t.Name]; ok {
		p.SetTemplate(t)
		p.SetConfig(w.cfg.PoolFor(t.Name))
		return p
	}
	var opts []pool.Option
	if _, err := os.Stat(w.drainedPath(t.Name)); err == nil {
		opts = append(opts, pool.WithDrained()) // an operator drained it in an earlier pool shim
	}
	p := pool.New(w.ns, t, w.cfg.PoolFor(t.Name), &trackedRuntime{w: w}, w.store.Use, opts...)
	w.pools[t.Name] = p
	return p
}

// keepTemplateSnapshot leases the image snapshot of a pool's template in the background.
// Called with mu held.
func (w *warm) keepTemplateSnapshot(t *store.Template) {
	if w.rootfs == nil {
		return
	}
	rootfs, st, ns := w.rootfs, w.store, w.ns
	current := func() bool {
		g, err := st.CurrentGeneration(ns, t.Name)
		return err == nil && g == t.Generation
	}
	go func() {
		if err := rootfs.KeepTemplate(context.Background(), t, current); err != nil {
			log.L.WithError(err).WithField("template", t.Name).Warn("lease on the template's image snapshot")
		}
	}()
}

// watchRestore kills the runc restore of id (a sandbox, or a container restored at
// Start), with the CRIU under it and the tasks CRIU was restoring, if it still runs
// after timeout (checkpoint_timeout; the configuration's when zero): CRIU has been seen
// to wait forever (for a breakpoint the host never fires). The restore then fails like
// any other (the pool destroys the sandbox and backs off; a Start returns the error).
// Stop the returned timer once the restore returned.
func (w *warm) watchRestore(ctx context.Context, id string, timeout time.Duration) *time.Timer {
	if timeout <= 0 {
		w.mu.Lock()
		timeout = w.cfg.Recovery.CheckpointTimeout.Duration
		w.mu.Unlock()
	}
	timeout = checkpointTimeout(timeout)
	return abortAfter(w.abort, timeout, "restore", id, func() {
		log.G(ctx).WithField("id", id).WithField("checkpoint_timeout", timeout).
			Warn("restore ran past checkpoint_timeout: runc, CRIU and the tasks it restored killed")
	})
}

// trackedRuntime records which pid each frozen sandbox has, so the reaper's exits reach
// the pool.
type trackedRuntime struct{ w *warm }

func (r *trackedRuntime) Restore(ctx context.Context, t *store.Template, id string) (any, int64, error) {
	watchdog := r.w.watchRestore(ctx, id, 0)
	h, mem, err := r.w.sandboxes.Restore(ctx, t, id)
	watchdog.Stop()
	if err != nil {
		return h, mem, err
	}
	sb := h.(*oci.Sandbox)
	if err := sb.CheckFresh(); err != nil {
		return h, mem, err // the pool destroys it
	}
	r.w.mu.Lock()
	r.w.frozen[sb.Pid] = frozenRef{pool: r.w.pools[t.Name], id: id, sb: sb}
	dynmods := r.w.dynmods
	r.w.mu.Unlock()
	if dynmods != nil {
		dynmods.kick() // CRIU mounted the sandbox's cgroup2: favordynmods is gone
	}
	return h, mem, nil
}

func (r *trackedRuntime) Poolable(t *store.Template) error {
	if t.Snapshotter == "" || t.SnapshotParent == "" {
		// Its sandboxes could get no rootfs; containers naming it are restored on create.
		return errors.New("the template records no image snapshot (containerd could not be asked when it was made): make it again to pool it")
	}
	return r.w.sandboxes.Poolable(t)
}

func (r *trackedRuntime) Destroy(ctx context.Context, h any) error {
	if sb, ok := h.(*oci.Sandbox); ok && sb != nil {
		r.w.mu.Lock()
		delete(r.w.frozen, sb.Pid)
		r.w.mu.Unlock()
	}
	return r.w.sandboxes.Destroy(ctx, h)
}

// exited is told every exit the reaper sees; a frozen sandbox that died leaves its pool.
func (w *warm) exited(pid int) {
	w.mu.Lock()
	ref, ok := w.frozen[pid]
	if ok {
		delete(w.frozen, pid)
	}
	w.mu.Unlock()
	// At once (it only takes the pool's lock), so that no Create is served the dead
	// sandbox meanwhile.
	if ok && ref.pool != nil {
		ref.pool.Died(context.Background(), ref.id)
	}
}

// plan decides how a Create that names a template is served, and prepares the request:
// a pool hit gets this binary as its runc (adoption happens in runc create), a
// restore-on-create gets the template's checkpoint, a miss is left cold.
func (w *warm) plan(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec, topts *taskOptions) error {
	began := time.Now()
	name := spec.Annotations[AnnTemplate]
	if err := store.ValidName(name); err != nil {
		return fmt.Errorf("annotation %s: %w", AnnTemplate, err)
	}
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if err := w.start(ctx, *topts, ns); err != nil {
		return err
	}
	l := log.G(ctx).WithField("template", name).WithField("container", r.ID)
	tTemplate := time.Now()
	p, t, cfg, err := w.templateFor(ctx, ns, name)
	tCompare := time.Now()
	if err != nil {
		l.WithError(err).Info("cold start: no such template (yet)")
		return nil
	}
	v := oci.Compare(t.Spec, t.Layers, spec, layersOf(r), cfg.AllowEnv)
	if r.Checkpoint != "" {
		// containerd restores the container from a checkpoint of its own (ctr task
		// start --checkpoint, a restore of a checkpoint image): its state is that
		// checkpoint's, never the template's.
		v = oci.Verdict{Reason: "the Create restores a checkpoint of its own"}
	}
	if v.Pool || v.Restore {
		if why, cold := w.runtimeDiffers(topts.runc, ns); why != "" {
			v.Pool, v.Reason = false, why
			v.Restore = v.Restore && !cold
		}
	}
	if v.Pool && p == nil {
		v.Pool = false
		v.Reason = "the container's shim is its pod's or group's, not the namespace's pool shim"
	}
	if v.Pool {
		tAcquire := time.Now()
		sb, err := p.Acquire(ctx, cfg.AcquireTimeout)
		if err == nil && sb.Template.Generation != t.Generation {
			// The template was replaced while Acquire waited: the sandbox is of a
			// generation the request was not compared with.
			if nv := oci.Compare(sb.Template.Spec, sb.Template.Layers, spec, layersOf(r), cfg.AllowEnv); nv.Pool {
				v.Rebind = nv.Rebind
			} else {
				_ = p.Release(ctx, sb)
				v.Restore = false // the generation compared may be gone: start cold
				err = fmt.Errorf("%w: the template was replaced while the Create waited, and its new generation does not match: %s", errReplaced, nv.Reason)
			}
		}
		if err == nil {
			tGate := time.Now()
			w.mu.Lock()
			var unpause func()
			if gate := w.gate; gate != nil {
				// Refills in progress stop until the hit started (refillgate); the
				// freezer writes are not made under mu.
				w.mu.Unlock()
				unpause = gate.Hit()
				w.mu.Lock()
			}
			w.served[r.ID] = &served{pool: p, sb: sb, bundle: r.Bundle, spec: spec, rebind: v.Rebind, unpause: unpause}
			delete(w.frozen, sb.Handle.(*oci.Sandbox).Pid)
			w.mu.Unlock()
			topts.runc.BinaryName = w.self
			// The delete action of a dead shim needs the real runc too.
			if err := os.WriteFile(filepath.Join(r.Bundle, "warm-runc"), []byte(w.runc), 0o600); err != nil {
				w.unplan(ctx, r.ID)
				return err
			}
			// The container runs on the sandbox's rootfs (a snapshot of the same layers);
			// the one containerd prepared stays unused and unmounted.
			r.Rootfs = nil
			if log.GetLevel() >= log.DebugLevel {
				l.WithField("sandbox", sb.ID).WithField("acquire", sb.AcquireLatency).
					WithField("config", tTemplate.Sub(began)).WithField("template_lookup", tCompare.Sub(tTemplate)).
					WithField("compare", tAcquire.Sub(tCompare)).WithField("acquired", tGate.Sub(tAcquire)).
					WithField("gate", time.Since(tGate)).Debug("pool hit")
			}
			return nil
		}
		switch {
		case errors.Is(err, pool.ErrClosed):
			v.Reason = "pool closed"
		case errors.Is(err, pool.ErrDrained):
			v.Reason = "pool drained (warmctl pool prewarm refills it)"
		case errors.Is(err, pool.ErrNotPoolable), errors.Is(err, errReplaced), errors.Is(err, pool.ErrNoRoom):
			v.Reason = err.Error()
		default:
			v.Reason = "pool empty after acquire_timeout"
		}
	}
	if p != nil {
		p.Miss(v.Reason)
	}
	if v.Restore {
		release, err := w.store.Acquire(t)
		if err != nil {
			l.WithError(err).Info("cold start: the template's generation is gone")
			return nil
		}
		w.mu.Lock()
		w.served[r.ID] = &served{pool: p, bundle: r.Bundle, spec: spec, release: release}
		w.mu.Unlock()
		r.Checkpoint = t.Images
		l.WithField("reason", v.Reason).Info("restore on create")
		return nil
	}
	l.WithField("reason", v.Reason).Info("cold start: request does not match the template")
	return nil
}

// runtimeDiffers says why the runc a request's options name cannot act on the pool's
// sandboxes ("" when it can), and whether the request must then start cold: another
// runc binary (it is not given the template's checkpoint either) rather than another
// runc root (a restore on create goes to the request's own root).
func (w *warm) runtimeDiffers(o *options.Options, ns string) (why string, cold bool) {
	w.mu.Lock()
	real, name := w.runc, w.runcName
	var sandboxRoot string
	if w.sandboxes != nil {
		sandboxRoot = w.sandboxes.Root
	}
	w.mu.Unlock()
	if b := o.BinaryName; b != "" && b != real && b != name && !samePath(b, real) {
		return fmt.Sprintf("runtime option binary_name %q is not the pool's runc (%s)", b, real), true
	}
	root := o.Root
	if root == "" {
		root = process.RuncRoot
	}
	if sandboxRoot != "" && filepath.Join(root, ns) != filepath.Clean(sandboxRoot) && !sameDir(filepath.Join(root, ns), sandboxRoot) {
		return fmt.Sprintf("runtime option root %q is not the pool's runc root (%s)", root, filepath.Dir(sandboxRoot)), false
	}
	return "", false
}

// sameDir reports whether two paths name the same directory through symbolic links
// (/var/run and /run); a path that does not exist is not the same as any.
func sameDir(a, b string) bool {
	ra, err := filepath.EvalSymlinks(a)
	if err != nil {
		return false
	}
	rb, err := filepath.EvalSymlinks(b)
	return err == nil && ra == rb
}

// samePath reports whether the binary name (a path, or a name looked up in PATH) is the
// file at path.
func samePath(name, path string) bool {
	p, err := exec.LookPath(name)
	if err != nil {
		return false
	}
	a, err := os.Stat(p)
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

// templateFor finds the template a Create names: the pool shim's pool of it (made
// from the store the first time, e.g. for a template another shim made), or, in a
// pod's or group's shim, the store's current generation and no pool.
func (w *warm) templateFor(ctx context.Context, ns, name string) (*pool.Pool, *store.Template, config.Resolved, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	cfg := w.cfg.PoolFor(name)
	if p := w.pools[name]; p != nil {
		// A generation made by another shim arrives through refreshTemplate.
		p.SetConfig(cfg)
		return p, p.Template(), cfg, nil
	}
	t, err := w.store.Get(ns, name)
	if err != nil {
		return nil, nil, cfg, err
	}
	if !w.poolShim {
		return nil, t, cfg, nil
	}
	p := w.poolLocked(t)
	return p, t, cfg, nil
}

// refreshTemplate gives the pool of a template the store's current generation, when
// another shim (a pod's or group's) has made a newer one: that shim tells the pool shim
// through the control socket, so a pool hit never reads the store.
func (w *warm) refreshTemplate(name string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.pools[name]
	if p == nil {
		return nil // the first Create that names it loads it from the store
	}
	g, err := w.store.CurrentGeneration(w.ns, name)
	if err != nil || g <= p.Template().Generation {
		return err
	}
	t, err := w.store.Get(w.ns, name)
	if err != nil {
		return err
	}
	w.keepTemplateSnapshot(t)
	p.SetTemplate(t)
	return nil
}

// errReplaced: a pool hit's sandbox was of a newer template generation that does not
// match the request.
var errReplaced = errors.New("template replaced")

// unplan undoes plan after a Create failed, so the container can be retried cold: a
// sandbox the failed Create adopted is removed from runc under the container's id too
// (the container never came to exist, so no Delete will).
func (w *warm) unplan(ctx context.Context, id string) { w.release(ctx, id, true) }

// deleted releases what plan took for a container that was deleted.
func (w *warm) deleted(ctx context.Context, id string) { w.release(ctx, id, false) }

func (w *warm) release(ctx context.Context, id string, createFailed bool) {
	w.mu.Lock()
	s := w.served[id]
	delete(w.served, id)
	w.mu.Unlock()
	if s == nil {
		return
	}
	// Wait for a runc command handleOp is carrying out on the sandbox (an adoption).
	s.opMu.Lock()
	s.gone = true
	s.opMu.Unlock()
	if s.unpause != nil {
		s.unpause()
	}
	if createFailed && s.sb != nil {
		w.sandboxesOf(s).Abandon(ctx, s.sb.Handle.(*oci.Sandbox))
	}
	switch {
	case s.sb != nil && s.pool != nil:
		_ = s.pool.Release(ctx, s.sb)
	case s.sb != nil && s.sandboxes != nil:
		destroyStandby(ctx, s.sandboxes, s.sb.Handle.(*oci.Sandbox))
	}
	if s.release != nil {
		s.release()
	}
}

// createdIn records how long a hit's Create took in the shim.
func (w *warm) createdIn(id string, d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := w.served[id]; s != nil && s.sb != nil {
		s.create = d
	}
}

// startedIn records a hit's Create+Start time in the shim with its pool.
func (w *warm) startedIn(id string, d time.Duration) {
	w.mu.Lock()
	s := w.served[id]
	w.mu.Unlock()
	if s != nil && s.unpause != nil {
		s.unpause()
	}
	if s != nil && s.sb != nil && s.pool != nil {
		s.pool.Served(s.sb.ID, s.create+d)
		log.L.WithField("container", id).WithField("create", s.create).WithField("start", d).Debug("pool hit served")
	}
}

// isHit reports whether the container was served from the pool.
func (w *warm) isHit(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.served[id]
	return s != nil && s.sb != nil
}

// outputPending returns, for the process pid of a container served from the pool (its
// sandbox's), what tells whether its output is still on its way to the container's pipes
// (nil for any other process, a restored one included).
func (w *warm) outputPending(id string, pid int) func() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.served[id]
	if s == nil || s.sb == nil {
		return nil
	}
	sb := s.sb.Handle.(*oci.Sandbox)
	if sb.Pid != pid {
		return nil
	}
	return sb.OutputPending
}

// holdsPools reports whether the shim must stay up for its pools, or for the imports of
// the checkpoint images its configuration names (retried until they succeed).
func (w *warm) holdsPools() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.importing) > 0 && !w.stopping {
		return true
	}
	for _, p := range w.pools {
		st := p.Stats()
		if !st.Drained || st.Frozen > 0 || st.Restoring > 0 || st.InUse > 0 {
			return true
		}
	}
	return false
}

// stop is an operator's shutdown of the pool shim: the imports end (and no longer hold it
// up) and no new one starts.
func (w *warm) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopping = true
	for _, kick := range w.importing {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
}

// drainAll drains every pool (they stay, empty, until Prewarm).
func (w *warm) drainAll(ctx context.Context) error {
	w.mu.Lock()
	pools := make([]*pool.Pool, 0, len(w.pools))
	for _, p := range w.pools {
		pools = append(pools, p)
	}
	w.mu.Unlock()
	var errs []error
	for _, p := range pools {
		errs = append(errs, p.Drain(ctx))
	}
	return errors.Join(errs...)
}

// close drains every pool and removes the sockets: nothing is left behind.
func (w *warm) close(ctx context.Context) error {
	w.mu.Lock()
	pools := w.pools
	w.pools = map[string]*pool.Pool{}
	l, ctl, dynmods := w.listener, w.ctl, w.dynmods
	w.dynmods = nil
	w.mu.Unlock()
	if dynmods != nil {
		dynmods.close()
	}
	var errs []error
	for _, p := range pools {
		errs = append(errs, p.Close(ctx))
	}
	w.mu.Lock()
	if w.sandboxes != nil {
		w.sandboxes.RemoveCgroupParent()
	}
	w.mu.Unlock()
	if l != nil {
		os.Remove(l.Addr().String())
		l.Close()
	}
	if ctl != nil {
		ctl.close()
	}
	return errors.Join(errs...)
}

func layersOf(r *taskAPI.CreateTaskRequest) string {
	var ms []oci.MountInfo
	for _, m := range r.Rootfs {
		ms = append(ms, oci.MountInfo{Type: m.Type, Source: m.Source, Options: m.Options})
	}
	return oci.LayersOf(ms)
}

// serveAdoptions answers the runc wrapper of adopted containers.
func (w *warm) serveAdoptions(l *net.UnixListener) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		go w.handleWrapper(c)
	}
}

func (w *warm) handleWrapper(c *net.UnixConn) {
	defer c.Close()
	// Only root's runc (the shim's children, or runc run by root beside it) acts on a
	// served container; the socket's directory is root's too.
	if uid, err := peerUID(c); err != nil || uid != 0 {
		_ = wrap.Reply(c, wrap.Response{Error: fmt.Sprintf("adoption socket: peer is not root (uid %d, %v)", uid, err)})
		return
	}
	req, files, err := wrap.ReadRequest(c)
	if err != nil {
		_ = wrap.Reply(c, wrap.Response{Error: err.Error()})
		return
	}
	_ = wrap.Reply(c, w.handleOp(context.Background(), req, files))
}

// peerUID is the uid of the process at the other end of a unix socket (SO_PEERCRED).
func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return -1, err
	}
	if cerr != nil {
		return -1, cerr
	}
	return int(cred.Uid), nil
}

// handleOp carries out a runc command of a container served from the pool: create
// adopts the sandbox (files are the stdin, stdout and stderr runc would have given its
// process; handleOp owns them), start thaws it, kill kills a sandbox that never started
// (delete kills it before runc deletes it). Handled false: run the real runc.
func (w *warm) handleOp(ctx context.Context, req wrap.Request, files []*os.File) (resp wrap.Response) {
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	w.mu.Lock()
	s := w.served[req.ID]
	w.mu.Unlock()
	if s == nil || s.sb == nil {
		return wrap.Response{Handled: false}
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.gone {
		// Released meanwhile (its Create failed): nothing is adopted any more.
		if req.Op == "create" {
			return wrap.Response{Error: "the container's create was abandoned"}
		}
		return wrap.Response{Handled: false}
	}
	sb := s.sb.Handle.(*oci.Sandbox)
	switch req.Op {
	case "create":
		if len(files) != 3 {
			resp.Error = "create without stdio"
			break
		}
		ar := oci.AdoptRequest{ContainerID: req.ID, Bundle: s.bundle, Spec: s.spec, Stdout: files[1], Stderr: files[2], Rebind: s.rebind}
		// Without stdin runc's stdin is /dev/null: the sandbox then reads EOF, as a
		// cold container would.
		if files[0] != nil && isPipe(files[0]) {
			ar.Stdin, files[0] = files[0], nil
		}
		// The output files now belong to the sandbox's copies.
		files[1], files[2] = nil, nil
		if err := w.sandboxesOf(s).Adopt(ctx, sb, ar); err != nil {
			resp.Error = err.Error()
			break
		}
		if req.PidFile != "" {
			if err := os.WriteFile(req.PidFile, []byte(strconv.Itoa(sb.Pid)), 0o600); err != nil {
				resp.Error = err.Error()
				break
			}
		}
		resp.Handled = true
	case "start":
		began := time.Now()
		defer func() {
			log.G(ctx).WithField("container", req.ID).WithField("thaw", time.Since(began)).Debug("sandbox thawed")
		}()
		if err := w.sandboxesOf(s).Thaw(ctx, sb); err != nil {
			resp.Error = err.Error()
			break
		}
		resp.Handled = true
	case "kill", "delete":
		// A sandbox that never started is frozen: it is killed as a cold container that
		// never started is (oci.KillUnstarted), and no code of the application runs.
		// Anything else is runc's.
		if sb.Started() || !sb.Adopted() {
			break
		}
		if req.Op == "kill" {
			sig, err := wrap.ParseSignal(req.Signal)
			if err == nil {
				first := oci.EndsUnstarted(sig) && s.endedBy.CompareAndSwap(0, int32(sig))
				if err = w.sandboxesOf(s).KillUnstarted(ctx, sb, sig); err != nil && first {
					s.endedBy.Store(0)
				}
			}
			if err != nil {
				resp.Error = err.Error()
				break
			}
			resp.Handled = true
			break
		}
		// runc delete refuses a paused container: it is killed first, and runc deletes
		// it once it is dead (runc waits as long for a created container it killed).
		if err := w.sandboxesOf(s).KillUnstarted(ctx, sb, unix.SIGKILL); err != nil && !errors.Is(err, oci.ErrNotRunning) {
			resp.Error = err.Error()
			break
		}
		for i := 0; i < 1000 && !sb.Gone(); i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return resp
}

// exitStatus is the status to report for the exit of process pid of container id: the
// kernel's, but for a served sandbox a kill ended before its Start, which reports what a
// cold container that never started reports for that kill.
func (w *warm) exitStatus(id string, pid, status int) int {
	w.mu.Lock()
	s := w.served[id]
	w.mu.Unlock()
	if s == nil || s.sb == nil || s.sb.Handle.(*oci.Sandbox).Pid != pid {
		return status
	}
	if sig := s.endedBy.Load(); sig != 0 {
		return oci.UnstartedExitStatus(unix.Signal(sig), status)
	}
	return status
}

func isPipe(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeNamedPipe != 0
}

// missed counts a miss of the template the spec names.
func (w *warm) missed(spec *specs.Spec, reason string) {
	if p := w.poolNamed(spec.Annotations[AnnTemplate]); p != nil {
		p.Miss(reason)
	}
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// sandboxRootfs is the root filesystem of the sandbox a container was served from ("" if
// it was not).
func (w *warm) sandboxRootfs(id string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := w.served[id]; s != nil && s.sb != nil {
		return filepath.Join(s.sb.Handle.(*oci.Sandbox).Bundle, "rootfs")
	}
	return ""
}

// imagesOf describes the checkpoint images a configuration names, for change detection.
func imagesOf(cfg config.Config) string {
	var parts []string
	for name := range cfg.Pools {
		if ref := cfg.PoolFor(name).Image; ref != "" {
			parts = append(parts, name+"="+ref)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// runcPaths returns the wrapper named as the runc of served containers and the real
// runc ("" before the pools started).
func (w *warm) runcPaths() (wrapper, real string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.self, w.runc
}

// runtimePaths returns the runc wrapper named as the runc of containers the shim adopts
// (warm-runc beside the shim, else the shim binary itself, which can act as it) and the
// real runc.
func runtimePaths(cfg config.Config) (wrapper, real string, err error) {
	self, err := os.Executable()
	if err != nil {
		return "", "", err
	}
	if small := filepath.Join(filepath.Dir(self), wrap.Binary); isExecutable(small) {
		self = small
	}
	real, err = exec.LookPath(cfg.Runc)
	if err != nil {
		return "", "", fmt.Errorf("runc %q: %w", cfg.Runc, err)
	}
	return self, real, nil
}

// useRuntime makes the shim able to adopt sandboxes outside a pool shim (a recovery
// standby): it learns the wrapper and the real runc.
func (w *warm) useRuntime(cfg config.Config) (wrapper, real string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.self != "" {
		return w.self, w.runc, nil
	}
	if w.self, w.runc, err = runtimePaths(cfg); err != nil {
		return "", "", err
	}
	w.runcName = cfg.Runc
	return w.self, w.runc, nil
}

// isPooled reports whether the container runs on a sandbox from a pool.
func (w *warm) isPooled(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.served[id]
	return s != nil && s.pool != nil && s.sb != nil
}
