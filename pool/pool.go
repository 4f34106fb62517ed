// Package pool keeps, per template, a pool of sandboxes already restored from the
// template's checkpoint and frozen, so a container can be served by thawing one instead
// of starting cold. The pool never runs runc or CRIU itself: it drives a Runtime, and it
// never holds its lock while the Runtime works (reserve, unlock, act, relock).
package pool

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/containerd/log"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/store"
)

// Runtime makes and destroys sandboxes. oci implements it on runc and CRIU.
type Runtime interface {
	// Restore restores a sandbox with the given id from the template and leaves it
	// frozen. It returns the runtime's handle and the sandbox's memory in bytes.
	Restore(ctx context.Context, t *store.Template, id string) (handle any, memory int64, err error)
	// Destroy removes a sandbox and everything it holds (processes, mounts, cgroups,
	// snapshots, directories), whether it was frozen, adopted or half restored.
	Destroy(ctx context.Context, handle any) error
	// Poolable says why the template's sandboxes cannot be restored ahead of a request
	// (nil when they can): e.g. a template made in a pod joined the pod's namespaces.
	// Such a pool holds no sandbox; its template serves by restore on create.
	Poolable(t *store.Template) error
}

// refillHoldoff is how long after an Acquire the refiller leaves the CPU to the hit.
const refillHoldoff = 100 * time.Millisecond

// maxInFlightHold bounds how long a hit that was acquired but has not started yet (see
// Served) holds the refills back.
const maxInFlightHold = time.Second

// ErrEmpty is returned by Acquire when no frozen sandbox came within the timeout.
var ErrEmpty = errors.New("pool empty")

// ErrClosed is returned by Acquire on a closed pool.
var ErrClosed = errors.New("pool closed")

// ErrNotPoolable is returned by Acquire when the template cannot be pooled.
var ErrNotPoolable = errors.New("template cannot be pooled")

// ErrDrained is returned by Acquire on a drained pool with nothing frozen: no refill
// comes until Prewarm, so waiting would only delay the fallback.
var ErrDrained = errors.New("pool drained")

// ErrNoRoom is returned by Acquire at once when the pool may hold no sandbox at all
// (max_memory is below one sandbox's memory): no refill would come.
var ErrNoRoom = errors.New("max_memory holds no sandbox of this template")

// Option configures a new pool.
type Option func(*Pool)

// WithDrained starts the pool drained (it restores nothing until Prewarm), as an
// operator left it in an earlier pool shim.
func WithDrained() Option { return func(p *Pool) { p.drained = true } }

// Sandbox is a frozen sandbox handed out by Acquire.
type Sandbox struct {
	ID         string
	Template   *store.Template
	Handle     any
	Memory     int64
	RestoredAt time.Time
	// AcquireLatency is how long Acquire took.
	AcquireLatency time.Duration
}

type entry struct {
	sb      Sandbox
	state   State
	release func() // of the template generation
	// acquiredAt and started: a hit in flight (acquired, not started) holds refills.
	acquiredAt time.Time
	started    bool
}

// Pool is the pool of one template in one namespace.
type Pool struct {
	ns, name string
	rt       Runtime
	use      func(*store.Template) (release func())
	now      func() time.Time

	mu   sync.Mutex
	cfg  config.Resolved // guarded by mu
	tmpl *store.Template // current generation; guarded by mu
	// restoreOnly is why tmpl cannot be pooled ("" when it can); guarded by mu.
	restoreOnly string
	entries     map[string]*entry // every sandbox not yet destroyed; guarded by mu
	frozen      []*entry          // oldest first; guarded by mu
	seq         int               // sandbox id counter; guarded by mu
	kick        chan struct{}     // wakes the refiller
	avail       chan struct{}     // closed and replaced when a sandbox becomes frozen; guarded by mu
	waiting     int               // Acquires waiting; guarded by mu
	drained     bool              // no refill until Prewarm; guarded by mu
	prewarm     int               // a floor set by Prewarm; guarded by mu
	closed      bool              // guarded by mu
	rate        float64           // acquires per second, decayed; guarded by mu
	rateAt      time.Time         // guarded by mu
	lastAcq     time.Time         // guarded by mu
	restore     time.Duration     // average restore time; guarded by mu
	memPer      int64             // memory of the last sandbox restored from tmpl; guarded by mu
	filled      bool              // the pool reached initial (or served a hit); guarded by mu
	stats       stats             // guarded by mu
	fails       int               // consecutive failed restores; guarded by mu
	retryAt     time.Time         // no restore before, after failures; guarded by mu
	wg          sync.WaitGroup    // refiller and in-flight restores/destroys
	// destroying counts destroys decided and not finished (their entry is already gone
	// from entries): Drain waits for them, so a drained pool holds no snapshot or lease;
	// guarded by mu.
	destroying int
	stop       chan struct{}
}

type stats struct {
	hits, restored, failed, destroyed int
	misses                            map[string]int
	latencies                         ring // the last acquires
	serves                            ring // the last hits' shim-side Create+Start
}

// ring keeps the last 1024 durations.
type ring struct {
	d    []time.Duration
	next int
}

func (r *ring) add(d time.Duration) {
	if len(r.d) < 1024 {
		r.d = append(r.d, d)
		return
	}
	r.d[r.next] = d
	r.next = (r.next + 1) % len(r.d)
}

// p50p99 returns the median and the 99th percentile.
func (r *ring) p50p99() (time.Duration, time.Duration) {
	sorted := append([]time.Duration(nil), r.d...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	return percentile(sorted, 50), percentile(sorted, 99)
}

// New returns a pool for template t and starts its refiller. use, if not nil, marks a
// template generation in use while sandboxes restored from it exist (store.Store.Use).
func New(ns string, t *store.Template, cfg config.Resolved, rt Runtime, use func(*store.Template) func(), opts ...Option) *Pool {
	p := &Pool{
		ns: ns, name: t.Name, rt: rt, use: use, now: time.Now,
		cfg: cfg, tmpl: t,
		entries: map[string]*entry{},
		kick:    make(chan struct{}, 1),
		avail:   make(chan struct{}),
		stop:    make(chan struct{}),
		stats:   stats{misses: map[string]int{}},
		restore: 200 * time.Millisecond,
	}
	p.rateAt = p.now()
	p.lastAcq = p.now()
	p.setRestoreOnlyLocked()
	for _, o := range opts {
		o(p)
	}
	p.wg.Add(1)
	go p.refiller()
	p.Kick()
	return p
}

// Name is the template's name.
func (p *Pool) Name() string { return p.name }

// Template returns the generation the pool serves.
func (p *Pool) Template() *store.Template {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tmpl
}

// Config returns the pool's configuration.
func (p *Pool) Config() config.Resolved {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

// SetTemplate makes a new generation current. Frozen sandboxes of older generations are
// never served again; the refiller replaces them.
func (p *Pool) SetTemplate(t *store.Template) {
	p.mu.Lock()
	if p.tmpl == nil || t.Generation > p.tmpl.Generation {
		p.tmpl = t
		p.memPer = 0
		p.setRestoreOnlyLocked()
	}
	p.mu.Unlock()
	p.Kick()
}

// setRestoreOnlyLocked asks the runtime whether the current generation can be pooled.
func (p *Pool) setRestoreOnlyLocked() {
	p.restoreOnly = ""
	if p.tmpl == nil {
		return
	}
	if err := p.rt.Poolable(p.tmpl); err != nil {
		p.restoreOnly = err.Error()
		log.L.WithField("pool", p.ns+"/"+p.name).WithError(err).Info("template cannot be pooled: containers naming it are served by restore on create")
	}
}

// SetConfig changes the pool's configuration.
func (p *Pool) SetConfig(cfg config.Resolved) {
	p.mu.Lock()
	p.cfg = cfg
	p.mu.Unlock()
	p.Kick()
}

// Kick wakes the refiller.
func (p *Pool) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Acquire takes the oldest frozen sandbox of the current generation. With none frozen
// it waits up to timeout for the refiller, then returns ErrEmpty: an empty pool never
// fails a Create, the caller falls back.
func (p *Pool) Acquire(ctx context.Context, timeout time.Duration) (*Sandbox, error) {
	start := p.now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	p.mu.Lock()
	p.noteArrival(start)
	for {
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		if p.restoreOnly != "" {
			p.mu.Unlock()
			return nil, fmt.Errorf("%w: %s", ErrNotPoolable, p.restoreOnly)
		}
		if p.drained && len(p.frozen) == 0 {
			p.mu.Unlock()
			return nil, ErrDrained
		}
		if e := p.takeLocked(); e != nil {
			e.acquiredAt = p.now()
			lat := p.now().Sub(start)
			e.sb.AcquireLatency = lat
			p.stats.hits++
			p.stats.latencies.add(lat)
			sb := e.sb
			p.mu.Unlock()
			p.Kick() // refill what was taken
			return &sb, nil
		}
		p.waiting++
		if p.desiredLocked(p.now()) == 0 && !p.drained {
			// Not even the callers waiting now would get a refill.
			p.waiting--
			p.mu.Unlock()
			return nil, ErrNoRoom
		}
		avail := p.avail
		p.mu.Unlock()
		p.Kick()
		var err error
		select {
		case <-avail:
		case <-deadline.C:
			err = ErrEmpty
		case <-ctx.Done():
			err = ctx.Err()
		}
		p.mu.Lock()
		p.waiting--
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
	}
}

// takeLocked pops the oldest frozen sandbox of the current generation.
func (p *Pool) takeLocked() *entry {
	for i, e := range p.frozen {
		if e.sb.Template.Generation != p.tmpl.Generation {
			continue
		}
		st, err := transition(e.state, Acquired)
		if err != nil {
			continue
		}
		e.state = st
		p.frozen = append(p.frozen[:i:i], p.frozen[i+1:]...)
		return e
	}
	return nil
}

// Served records that the container served from sandbox id has started, and how long
// the shim took to Create and Start it (its own share of a hit's latency). The last hit
// in flight to start lets the refills run.
func (p *Pool) Served(id string, d time.Duration) {
	p.mu.Lock()
	p.stats.serves.add(d)
	if e := p.entries[id]; e != nil {
		e.started = true
	}
	idle := p.inFlightLocked(p.now()) == 0
	p.mu.Unlock()
	if idle {
		p.Kick()
	}
}

// inFlightLocked counts hits acquired (within maxInFlightHold) that have not started.
func (p *Pool) inFlightLocked(now time.Time) int {
	n := 0
	for _, e := range p.entries {
		if e.state == Acquired && !e.started && now.Sub(e.acquiredAt) < maxInFlightHold {
			n++
		}
	}
	return n
}

// noteArrival updates the decayed arrival rate (half-life 10s).
func (p *Pool) noteArrival(at time.Time) {
	p.decayRate(at)
	p.rate++
	p.lastAcq = at
}

func (p *Pool) decayRate(at time.Time) {
	dt := at.Sub(p.rateAt).Seconds()
	if dt > 0 {
		p.rate *= math.Pow(0.5, dt/10)
		p.rateAt = at
	}
}

// Miss counts a Create that named the template but was not served from the pool.
func (p *Pool) Miss(reason string) {
	p.mu.Lock()
	p.stats.misses[reason]++
	p.mu.Unlock()
}

// Release destroys a sandbox handed out by Acquire. A used sandbox never returns to
// the pool; the refiller restores a fresh one from the clean template.
func (p *Pool) Release(ctx context.Context, sb *Sandbox) error {
	p.mu.Lock()
	e, ok := p.entries[sb.ID]
	if !ok {
		p.mu.Unlock()
		return fmt.Errorf("sandbox %s is not in pool %s", sb.ID, p.name)
	}
	if e.state != Acquired {
		p.mu.Unlock()
		return ErrTransition{e.state, Destroyed}
	}
	p.mu.Unlock()
	return p.destroy(ctx, e)
}

// Died tells the pool that a frozen sandbox's process exited: no Acquire takes it from
// the moment Died returns, and it is destroyed in the background.
func (p *Pool) Died(ctx context.Context, id string) {
	p.mu.Lock()
	e, ok := p.entries[id]
	if !ok || e.state != Frozen {
		p.mu.Unlock()
		return
	}
	p.removeFrozenLocked(e)
	err := p.beginDestroyLocked(e)
	p.mu.Unlock()
	if err != nil {
		return
	}
	log.G(ctx).WithField("sandbox", id).Warn("pooled sandbox died while frozen")
	go func() {
		_ = p.finishDestroy(ctx, e)
		p.Kick()
	}()
}

func (p *Pool) removeFrozenLocked(e *entry) {
	for i, f := range p.frozen {
		if f == e {
			p.frozen = append(p.frozen[:i:i], p.frozen[i+1:]...)
			return
		}
	}
}

// destroy moves e to Destroyed and has the runtime remove it.
func (p *Pool) destroy(ctx context.Context, e *entry) error {
	p.mu.Lock()
	err := p.beginDestroyLocked(e)
	p.mu.Unlock()
	if err != nil {
		return err
	}
	return p.finishDestroy(ctx, e)
}

// beginDestroyLocked moves e to Destroyed: no one takes it from here, and Drain waits
// until finishDestroy ran.
func (p *Pool) beginDestroyLocked(e *entry) error {
	st, err := transition(e.state, Destroyed)
	if err != nil {
		return err
	}
	e.state = st
	delete(p.entries, e.sb.ID)
	p.stats.destroyed++
	p.destroying++
	return nil
}

// finishDestroy has the runtime remove a sandbox beginDestroyLocked moved to Destroyed,
// and releases its template generation.
func (p *Pool) finishDestroy(ctx context.Context, e *entry) error {
	err := p.rt.Destroy(ctx, e.sb.Handle)
	if e.release != nil {
		e.release()
	}
	p.mu.Lock()
	p.destroying--
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("destroy sandbox %s: %w", e.sb.ID, err)
	}
	return nil
}

// Drain destroys every frozen sandbox and stops refilling until Prewarm.
func (p *Pool) Drain(ctx context.Context) error {
	p.mu.Lock()
	p.drained = true
	p.prewarm = 0
	victims := p.frozen
	p.frozen = nil
	p.mu.Unlock()
	var errs []error
	for _, e := range victims {
		errs = append(errs, p.destroy(ctx, e))
	}
	// Restores in flight destroy their sandbox when they finish (drained); wait for
	// them and for destroys in flight, so a drained pool holds nothing.
	for {
		p.mu.Lock()
		restoring := p.destroying
		for _, e := range p.entries {
			if e.state == Restoring {
				restoring++
			}
		}
		p.mu.Unlock()
		if restoring == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return errors.Join(append(errs, ctx.Err())...)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return errors.Join(errs...)
}

// Prewarm makes the pool hold at least n frozen sandboxes (bounded by max) and resumes
// refilling after a Drain.
func (p *Pool) Prewarm(n int) {
	p.mu.Lock()
	p.drained = false
	p.prewarm = n
	p.mu.Unlock()
	p.Kick()
}

// Close stops the refiller and destroys every sandbox that is not in use. Sandboxes
// in use stay with their containers until Release.
func (p *Pool) Close(ctx context.Context) error { return p.close(ctx, false) }

// CloseUnused is Close for a pool none of whose sandboxes a container uses: with one in
// use it fails (store.ErrInUse) and closes nothing. It checks and closes under the lock
// Acquire hands sandboxes out under, so no Create takes one in between.
func (p *Pool) CloseUnused(ctx context.Context) error { return p.close(ctx, true) }

func (p *Pool) close(ctx context.Context, unused bool) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	if unused {
		n := 0
		for _, e := range p.entries {
			if e.state == Acquired {
				n++
			}
		}
		if n > 0 {
			p.mu.Unlock()
			return fmt.Errorf("%w by %d container(s)", store.ErrInUse, n)
		}
	}
	p.closed = true
	close(p.stop)
	close(p.avail)
	p.mu.Unlock()
	p.wg.Wait() // the refiller and its restores are done
	return p.Drain(ctx)
}

// desiredLocked is how many frozen (or restoring) sandboxes the pool aims for.
func (p *Pool) desiredLocked(now time.Time) int {
	if p.drained || p.restoreOnly != "" {
		return 0
	}
	c := p.cfg
	want := c.Min
	// The first fill goes up to initial, over as many rounds as refill_batch needs.
	if !p.filled && (len(p.frozen) >= c.Initial || p.stats.hits > 0) {
		p.filled = true
	}
	if p.tmpl != nil && !p.filled && c.Initial > want {
		want = c.Initial
	}
	// Size from the arrival rate: twice the arrivals expected during one restore and
	// refill round, plus whoever waits now. rate decays with a 10s half-life, so
	// rate*ln2/10 estimates arrivals per second and a burst raises it at once.
	p.decayRate(now)
	if now.Sub(p.lastAcq) < c.IdleTimeout {
		perSec := p.rate * math.Ln2 / 10
		cover := 2 * perSec * (p.restore + c.RefillInterval).Seconds()
		want = max(want, c.Min+int(math.Ceil(cover))+p.waiting)
	}
	// Whoever waits now is served, however idle the pool was.
	want = max(want, c.Min+p.waiting, p.prewarm)
	if want > c.Max {
		want = c.Max
	}
	// max_memory: by what a sandbox of this generation measured once restored, else
	// what the application had when its template was made.
	per := p.memPer
	if per <= 0 && p.tmpl != nil {
		per = p.tmpl.MemoryBytes
	}
	if c.MaxMemory > 0 && per > 0 {
		if byMem := int(c.MaxMemory / per); want > byMem {
			want = byMem
		}
	}
	return want
}

func (p *Pool) refiller() {
	defer p.wg.Done()
	ctx := log.WithLogger(context.Background(), log.G(context.Background()).WithField("pool", p.ns+"/"+p.name))
	for {
		p.mu.Lock()
		interval := p.cfg.RefillInterval
		p.mu.Unlock()
		t := time.NewTimer(interval)
		select {
		case <-p.stop:
			t.Stop()
			return
		case <-p.kick:
		case <-t.C:
		}
		t.Stop()
		p.round(ctx)
	}
}

// round runs one refill round: destroy stale and surplus sandboxes, restore up to
// refill_batch new ones.
func (p *Pool) round(ctx context.Context) {
	p.mu.Lock()
	if p.closed || p.tmpl == nil {
		p.mu.Unlock()
		return
	}
	now := p.now()
	want := p.desiredLocked(now)
	var victims []*entry
	// Stale generations are never served: replace them.
	keep := p.frozen[:0:0]
	for _, e := range p.frozen {
		if e.sb.Template.Generation != p.tmpl.Generation {
			victims = append(victims, e)
		} else {
			keep = append(keep, e)
		}
	}
	p.frozen = keep
	restoring := 0
	for _, e := range p.entries {
		if e.state == Restoring {
			restoring++
		}
	}
	// Shrink: above max always; above the desired size once idle.
	limit := p.cfg.Max
	if now.Sub(p.lastAcq) >= p.cfg.IdleTimeout || p.drained {
		limit = want
	}
	for len(p.frozen) > limit {
		victims = append(victims, p.frozen[0])
		p.frozen = p.frozen[1:]
	}
	n := want - len(p.frozen) - restoring
	if now.Before(p.retryAt) {
		n = 0
	}
	// Hits are being served (acquired and not started yet, or just acquired): restoring
	// now (CRIU is CPU heavy) would slow them down, all the more in a burst. Unless
	// callers wait or nothing is frozen, refill once they have started.
	if p.waiting == 0 && len(p.frozen) > 0 && (now.Sub(p.lastAcq) < refillHoldoff || p.inFlightLocked(now) > 0) {
		n = 0
		go func() {
			time.Sleep(refillHoldoff)
			p.Kick()
		}()
	}
	if n > p.cfg.RefillBatch-restoring {
		n = p.cfg.RefillBatch - restoring
	}
	var todo []*entry
	for i := 0; i < n; i++ {
		p.seq++
		e := &entry{state: Restoring, sb: Sandbox{ID: fmt.Sprintf("warm-%s-%s-%d-%d", p.ns, p.name, p.tmpl.Generation%100000, p.seq), Template: p.tmpl}}
		p.entries[e.sb.ID] = e
		todo = append(todo, e)
	}
	p.wg.Add(len(todo))
	for _, e := range victims {
		_ = p.beginDestroyLocked(e) // frozen until now: the transition holds
	}
	p.mu.Unlock()

	for _, e := range victims {
		if err := p.finishDestroy(ctx, e); err != nil {
			log.G(ctx).WithError(err).Warn("destroy surplus sandbox")
		}
	}
	for _, e := range todo {
		go p.restoreOne(ctx, e)
	}
}

func (p *Pool) restoreOne(ctx context.Context, e *entry) {
	defer p.wg.Done()
	if p.use != nil {
		// The generation must outlive every sandbox restored from it.
		r := p.use(e.sb.Template)
		p.mu.Lock()
		e.release = r
		p.mu.Unlock()
	}
	start := p.now()
	handle, mem, err := p.rt.Restore(ctx, e.sb.Template, e.sb.ID)
	took := p.now().Sub(start)
	p.mu.Lock()
	e.sb.Handle = handle
	if err != nil {
		p.stats.failed++
		// Back off exponentially (up to 30s) while restores keep failing.
		p.fails++
		backoff := p.cfg.RefillInterval << min(p.fails, 16)
		p.retryAt = p.now().Add(min(backoff, 30*time.Second))
		p.mu.Unlock()
		log.G(ctx).WithError(err).WithField("sandbox", e.sb.ID).Error("restore pooled sandbox")
		_ = p.destroy(ctx, e)
		return
	}
	p.fails = 0
	e.sb.Memory = mem
	if mem > 0 && p.tmpl != nil && e.sb.Template.Generation == p.tmpl.Generation {
		p.memPer = mem
	}
	e.sb.RestoredAt = p.now()
	p.restore = (p.restore*3 + took) / 4
	st, terr := transition(e.state, Frozen)
	if terr != nil || p.closed || p.drained {
		// Drained or closed while restoring: it never joins the pool.
		p.mu.Unlock()
		_ = p.destroy(ctx, e)
		return
	}
	e.state = st
	p.frozen = append(p.frozen, e)
	p.stats.restored++
	close(p.avail)
	p.avail = make(chan struct{})
	p.mu.Unlock()
	p.Kick() // more may be wanted
}

// Stats is a pool's state for operators.
type Stats struct {
	Namespace  string         `json:"namespace"`
	Template   string         `json:"template"`
	Generation int64          `json:"generation"`
	Frozen     int            `json:"frozen"`
	Restoring  int            `json:"restoring"`
	InUse      int            `json:"in_use"`
	Hits       int            `json:"hits"`
	Misses     map[string]int `json:"misses"`
	Restored   int            `json:"restored"`
	Failed     int            `json:"failed"`
	Destroyed  int            `json:"destroyed"`
	P50        time.Duration  `json:"acquire_p50_ns"`
	P99        time.Duration  `json:"acquire_p99_ns"`
	// ServeP50 and ServeP99 are the shim's Create+Start time of a hit.
	ServeP50 time.Duration `json:"serve_p50_ns"`
	ServeP99 time.Duration `json:"serve_p99_ns"`
	Memory   int64         `json:"memory_bytes"`
	// Merged is how much of the frozen sandboxes' memory the kernel merged (KSM, a pool
	// with ksm = true): set by the shim's listing of its pools, not by the pool.
	Merged  int64 `json:"merged_bytes,omitempty"`
	Desired int   `json:"desired"`
	Drained bool  `json:"drained"`
	// RestoreOnly is why the template cannot be pooled (its containers are restored).
	RestoreOnly string `json:"restore_only,omitempty"`
}

// Stats returns the pool's state.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{Namespace: p.ns, Template: p.name, Hits: p.stats.hits, Restored: p.stats.restored,
		Failed: p.stats.failed, Destroyed: p.stats.destroyed, Misses: map[string]int{}, Drained: p.drained,
		RestoreOnly: p.restoreOnly}
	if p.tmpl != nil {
		s.Generation = p.tmpl.Generation
	}
	for k, v := range p.stats.misses {
		s.Misses[k] = v
	}
	for _, e := range p.entries {
		switch e.state {
		case Frozen:
			s.Frozen++
			s.Memory += e.sb.Memory
		case Restoring:
			s.Restoring++
		case Acquired:
			s.InUse++
		}
	}
	s.P50, s.P99 = p.stats.latencies.p50p99()
	s.ServeP50, s.ServeP99 = p.stats.serves.p50p99()
	s.Desired = p.desiredLocked(p.now())
	return s
}

func percentile(sorted []time.Duration, pct float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(pct/100*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	return sorted[i]
}
