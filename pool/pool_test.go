package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/store"
)

// fakeRuntime keeps sandboxes in memory; restores take delay and can be made to fail.
type fakeRuntime struct {
	mu         sync.Mutex
	delay      time.Duration
	slowKill   time.Duration // how long a Destroy takes
	fail       error
	unpoolable error
	live       map[string]bool // id -> exists
	restores   atomic.Int32
	destroyed  atomic.Int32
}

func newFake() *fakeRuntime { return &fakeRuntime{live: map[string]bool{}} }

func (f *fakeRuntime) Restore(ctx context.Context, t *store.Template, id string) (any, int64, error) {
	f.restores.Add(1)
	f.mu.Lock()
	delay, fail := f.delay, f.fail
	f.mu.Unlock()
	time.Sleep(delay)
	if fail != nil {
		return id, 0, fail
	}
	f.mu.Lock()
	f.live[id] = true
	f.mu.Unlock()
	return id, 10 << 20, nil
}

func (f *fakeRuntime) Poolable(t *store.Template) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.unpoolable
}

func (f *fakeRuntime) Destroy(ctx context.Context, h any) error {
	f.destroyed.Add(1)
	f.mu.Lock()
	slow := f.slowKill
	f.mu.Unlock()
	time.Sleep(slow)
	f.mu.Lock()
	delete(f.live, h.(string))
	f.mu.Unlock()
	return nil
}

func (f *fakeRuntime) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.live)
}

func cfg(min, max int) config.Resolved {
	return config.Resolved{Min: min, Max: max, Initial: min, RefillBatch: 2,
		RefillInterval: 5 * time.Millisecond, AcquireTimeout: time.Second, IdleTimeout: time.Hour}
}

func tmpl(gen int64) *store.Template {
	return &store.Template{Meta: store.Meta{Name: "app", Namespace: "ns", MemoryBytes: 10 << 20}, Generation: gen}
}

// eventually polls cond; the bound only stops a broken test from hanging.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 2000; i++ {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("never: %s", what)
}

func closePool(t *testing.T, p *Pool, rt *fakeRuntime) {
	t.Helper()
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := rt.count(); n != 0 {
		t.Fatalf("%d sandboxes left after Close", n)
	}
}

func TestFillsToMinAndRefillsAfterAcquire(t *testing.T) {
	rt := newFake()
	p := New("ns", tmpl(1), cfg(3, 5), rt, nil)
	eventually(t, "3 frozen", func() bool { return p.Stats().Frozen == 3 })
	sb, err := p.Acquire(context.Background(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "refilled to 3 frozen", func() bool { return p.Stats().Frozen >= 3 })
	if st := p.Stats(); st.InUse != 1 || st.Hits != 1 {
		t.Fatalf("stats %+v", st)
	}
	if err := p.Release(context.Background(), sb); err != nil {
		t.Fatal(err)
	}
	// A released sandbox is destroyed, never served again.
	if err := p.Release(context.Background(), sb); err == nil {
		t.Fatal("second release of the same sandbox succeeded")
	}
	closePool(t, p, rt)
}

func TestAcquireOldestFirst(t *testing.T) {
	rt := newFake()
	p := New("ns", tmpl(1), cfg(3, 3), rt, nil)
	eventually(t, "3 frozen", func() bool { return p.Stats().Frozen == 3 })
	a, _ := p.Acquire(context.Background(), time.Second)
	b, _ := p.Acquire(context.Background(), time.Second)
	if !a.RestoredAt.Before(b.RestoredAt) && a.RestoredAt != b.RestoredAt {
		t.Fatalf("acquired %v before the older %v", a.RestoredAt, b.RestoredAt)
	}
	_ = p.Release(context.Background(), a)
	_ = p.Release(context.Background(), b)
	closePool(t, p, rt)
}

func TestEmptyPoolTimesOut(t *testing.T) {
	rt := newFake()
	rt.delay = 200 * time.Millisecond
	c := cfg(0, 2)
	c.Initial = 0
	p := New("ns", tmpl(1), c, rt, nil)
	start := time.Now()
	_, err := p.Acquire(context.Background(), 20*time.Millisecond)
	if !errors.Is(err, ErrEmpty) {
		t.Fatalf("want ErrEmpty, got %v", err)
	}
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Fatalf("Acquire blocked %v past its timeout", d)
	}
	// The wait itself raised demand: a refill is under way and a patient caller is served.
	sb, err := p.Acquire(context.Background(), 2*time.Second)
	if err != nil {
		t.Fatalf("after refill: %v", err)
	}
	_ = p.Release(context.Background(), sb)
	closePool(t, p, rt)
}

func TestRestoreFailureIsCountedAndNotServed(t *testing.T) {
	rt := newFake()
	rt.fail = errors.New("criu: restore failed")
	p := New("ns", tmpl(1), cfg(1, 2), rt, nil)
	eventually(t, "failures counted", func() bool { return p.Stats().Failed >= 2 })
	// Failing restores back off instead of spinning.
	n := rt.restores.Load()
	time.Sleep(50 * time.Millisecond)
	if more := rt.restores.Load() - n; more > 4 {
		t.Fatalf("%d more restores in 50ms after repeated failures: no backoff", more)
	}
	if _, err := p.Acquire(context.Background(), 10*time.Millisecond); !errors.Is(err, ErrEmpty) {
		t.Fatalf("a failed restore was served: %v", err)
	}
	closePool(t, p, rt)
}

func TestShrinksAboveMax(t *testing.T) {
	rt := newFake()
	p := New("ns", tmpl(1), cfg(4, 4), rt, nil)
	eventually(t, "4 frozen", func() bool { return p.Stats().Frozen == 4 })
	p.SetConfig(cfg(1, 2))
	eventually(t, "shrunk to max 2", func() bool { return p.Stats().Frozen == 2 && rt.count() == 2 })
	closePool(t, p, rt)
}

func TestIdleShrinksToMin(t *testing.T) {
	rt := newFake()
	c := cfg(1, 6)
	c.IdleTimeout = 50 * time.Millisecond
	p := New("ns", tmpl(1), c, rt, nil)
	p.Prewarm(5)
	eventually(t, "prewarmed to 5", func() bool { return p.Stats().Frozen == 5 })
	p.Prewarm(0) // the operator's floor goes; idleness takes it back to min
	eventually(t, "idle pool shrunk to min", func() bool { return p.Stats().Frozen == 1 })
	closePool(t, p, rt)
}

func TestBurstRaisesDesiredSize(t *testing.T) {
	rt := newFake()
	p := New("ns", tmpl(1), cfg(1, 8), rt, nil)
	eventually(t, "1 frozen", func() bool { return p.Stats().Frozen == 1 })
	var got []*Sandbox
	for i := 0; i < 6; i++ {
		sb, err := p.Acquire(context.Background(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, sb)
	}
	if d := p.Stats().Desired; d <= 1 {
		t.Fatalf("desired %d after a burst of 6; want above min", d)
	}
	for _, sb := range got {
		_ = p.Release(context.Background(), sb)
	}
	closePool(t, p, rt)
}

func TestMaxMemoryBoundsThePool(t *testing.T) {
	rt := newFake()
	c := cfg(5, 5)
	c.MaxMemory = 25 << 20 // the template's sandboxes are 10 MiB: room for two
	p := New("ns", tmpl(1), c, rt, nil)
	eventually(t, "2 frozen", func() bool { return p.Stats().Frozen == 2 })
	time.Sleep(30 * time.Millisecond)
	if n := p.Stats().Frozen + p.Stats().Restoring; n != 2 {
		t.Fatalf("%d sandboxes under a memory bound for 2", n)
	}
	closePool(t, p, rt)
}

func TestNewGenerationIsNeverMixed(t *testing.T) {
	rt := newFake()
	p := New("ns", tmpl(1), cfg(2, 2), rt, nil)
	eventually(t, "2 frozen", func() bool { return p.Stats().Frozen == 2 })
	rt.mu.Lock()
	rt.delay = 30 * time.Millisecond
	rt.mu.Unlock()
	p.SetTemplate(tmpl(2))
	// Until generation 2 is restored the pool is empty for callers: never generation 1.
	for i := 0; i < 5; i++ {
		sb, err := p.Acquire(context.Background(), 200*time.Millisecond)
		if err != nil {
			continue
		}
		if sb.Template.Generation != 2 {
			t.Fatalf("served generation %d after the template was replaced", sb.Template.Generation)
		}
		_ = p.Release(context.Background(), sb)
	}
	closePool(t, p, rt)
}

func TestDrainAndPrewarm(t *testing.T) {
	rt := newFake()
	p := New("ns", tmpl(1), cfg(2, 4), rt, nil)
	eventually(t, "2 frozen", func() bool { return p.Stats().Frozen == 2 })
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if st := p.Stats(); st.Frozen != 0 || st.Restoring != 0 || rt.count() != 0 {
		t.Fatalf("after drain: %+v, %d live", st, rt.count())
	}
	p.Prewarm(3)
	eventually(t, "prewarmed to 3", func() bool { return p.Stats().Frozen == 3 })
	closePool(t, p, rt)
}

func TestDiedWhileFrozen(t *testing.T) {
	rt := newFake()
	p := New("ns", tmpl(1), cfg(1, 1), rt, nil)
	eventually(t, "1 frozen", func() bool { return p.Stats().Frozen == 1 })
	var id string
	p.mu.Lock()
	id = p.frozen[0].sb.ID
	p.mu.Unlock()
	rt.mu.Lock()
	rt.slowKill = 50 * time.Millisecond // the destroy is still running below
	rt.mu.Unlock()
	p.Died(context.Background(), id)
	// Once Died returns, the dead sandbox is never served.
	if sb, err := p.Acquire(context.Background(), 0); err == nil && sb.ID == id {
		t.Fatal("a sandbox that died was served")
	} else if err == nil {
		_ = p.Release(context.Background(), sb)
	}
	eventually(t, "replaced", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.frozen) == 1 && p.frozen[0].sb.ID != id
	})
	closePool(t, p, rt)
}

func TestConcurrentAcquireNeverSharesASandbox(t *testing.T) {
	rt := newFake()
	p := New("ns", tmpl(1), cfg(5, 8), rt, nil)
	eventually(t, "5 frozen", func() bool { return p.Stats().Frozen == 5 })
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
		wg   sync.WaitGroup
	)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sb, err := p.Acquire(context.Background(), 2*time.Second)
			if err != nil {
				return // a fallback, not a failure
			}
			mu.Lock()
			if seen[sb.ID] {
				t.Errorf("sandbox %s handed out twice", sb.ID)
			}
			seen[sb.ID] = true
			mu.Unlock()
			_ = p.Release(context.Background(), sb)
		}()
	}
	wg.Wait()
	if len(seen) < 5 {
		t.Fatalf("only %d of 50 concurrent acquires were served", len(seen))
	}
	closePool(t, p, rt)
}

func TestClosedPool(t *testing.T) {
	rt := newFake()
	p := New("ns", tmpl(1), cfg(1, 1), rt, nil)
	closePool(t, p, rt)
	if _, err := p.Acquire(context.Background(), time.Millisecond); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v", err)
	}
}

func TestUseMarksGenerations(t *testing.T) {
	rt := newFake()
	var mu sync.Mutex
	users := 0
	use := func(*store.Template) func() {
		mu.Lock()
		users++
		mu.Unlock()
		return func() { mu.Lock(); users--; mu.Unlock() }
	}
	p := New("ns", tmpl(1), cfg(2, 2), rt, use)
	eventually(t, "2 frozen", func() bool { return p.Stats().Frozen == 2 })
	mu.Lock()
	if users != 2 {
		t.Errorf("users %d with 2 sandboxes", users)
	}
	mu.Unlock()
	closePool(t, p, rt)
	if users != 0 {
		t.Fatalf("users %d after close", users)
	}
}

// TestTransitions tries every pair of states against the table.
func TestTransitions(t *testing.T) {
	want := map[[2]State]bool{
		{Restoring, Frozen}: true, {Restoring, Destroyed}: true,
		{Frozen, Acquired}: true, {Frozen, Destroyed}: true,
		{Acquired, Destroyed}: true,
	}
	all := []State{Restoring, Frozen, Acquired, Destroyed}
	for _, from := range all {
		for _, to := range all {
			t.Run(fmt.Sprintf("%s->%s", from, to), func(t *testing.T) {
				got, err := transition(from, to)
				if want[[2]State{from, to}] {
					if err != nil || got != to {
						t.Fatalf("allowed move refused: %v", err)
					}
					return
				}
				var te ErrTransition
				if !errors.As(err, &te) || got != from {
					t.Fatalf("move allowed that must not be: got %v, %v", got, err)
				}
			})
		}
	}
}

// TestDrainWaitsForRestores: a drain while restores are in flight returns only when they
// are done and destroyed; nothing joins the drained pool.
func TestDrainWaitsForRestores(t *testing.T) {
	rt := newFake()
	rt.delay = 80 * time.Millisecond
	p := New("ns", tmpl(1), cfg(3, 3), rt, nil)
	eventually(t, "restores in flight", func() bool { return p.Stats().Restoring > 0 })
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Frozen != 0 || st.Restoring != 0 || rt.count() != 0 {
		t.Fatalf("after drain: %+v, %d live", st, rt.count())
	}
	closePool(t, p, rt)
}

// A destroy still running (a restore that finished after the drain began, a released
// sandbox) holds a snapshot and a lease: Drain returns only when it is done.
func TestDrainWaitsForDestroys(t *testing.T) {
	rt := newFake()
	rt.delay = 40 * time.Millisecond
	rt.slowKill = 60 * time.Millisecond
	p := New("ns", tmpl(1), cfg(2, 2), rt, nil)
	eventually(t, "restores in flight", func() bool { return p.Stats().Restoring > 0 })
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := rt.count(); n != 0 {
		t.Fatalf("Drain returned with %d sandboxes still being destroyed", n)
	}
	closePool(t, p, rt)
}

func TestRestoreOnlyTemplate(t *testing.T) {
	rt := newFake()
	rt.unpoolable = errors.New("template joined an existing network namespace")
	p := New("ns", tmpl(1), cfg(2, 4), rt, nil)
	start := time.Now()
	if _, err := p.Acquire(context.Background(), time.Second); !errors.Is(err, ErrNotPoolable) {
		t.Fatalf("want ErrNotPoolable, got %v", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Acquire of a restore-only pool waited %v", d)
	}
	p.Prewarm(3)
	time.Sleep(50 * time.Millisecond) // ten refill intervals
	if st := p.Stats(); st.Frozen+st.Restoring != 0 || st.Desired != 0 || st.RestoreOnly == "" || rt.restores.Load() != 0 {
		t.Fatalf("a restore-only pool restored sandboxes: %+v (restores %d)", st, rt.restores.Load())
	}
	// A new generation that can be pooled fills the pool.
	rt.mu.Lock()
	rt.unpoolable = nil
	rt.mu.Unlock()
	p.SetTemplate(tmpl(2))
	eventually(t, "2 frozen", func() bool { return p.Stats().Frozen >= 2 })
	if st := p.Stats(); st.RestoreOnly != "" {
		t.Fatalf("stats %+v", st)
	}
	closePool(t, p, rt)
}

// Hits acquired and not yet started hold the refills back (a restore would take the CPU
// from them); the last one to start lets the refill run.
func TestRefillWaitsForHitsInFlight(t *testing.T) {
	rt := newFake()
	p := New("ns", tmpl(1), cfg(3, 3), rt, nil)
	eventually(t, "3 frozen", func() bool { return p.Stats().Frozen == 3 })
	before := rt.restores.Load()
	a, err := p.Acquire(context.Background(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Acquire(context.Background(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * refillHoldoff) // past the holdoff, within maxInFlightHold
	if n := rt.restores.Load() - before; n != 0 {
		t.Fatalf("%d restores while two hits were in flight", n)
	}
	p.Served(a.ID, time.Millisecond)
	time.Sleep(2 * refillHoldoff)
	if n := rt.restores.Load() - before; n != 0 {
		t.Fatalf("%d restores while one hit was in flight", n)
	}
	p.Served(b.ID, time.Millisecond)
	eventually(t, "refilled to 3 frozen", func() bool { return p.Stats().Frozen == 3 })
	if st := p.Stats(); st.ServeP50 != time.Millisecond {
		t.Fatalf("stats %+v", st)
	}
	_ = p.Release(context.Background(), a)
	_ = p.Release(context.Background(), b)
	closePool(t, p, rt)
}

// A pool started drained (an operator drained it in an earlier pool shim) restores
// nothing, fails an Acquire at once, and fills on Prewarm.
func TestStartDrained(t *testing.T) {
	rt := newFake()
	p := New("ns", tmpl(1), cfg(2, 4), rt, nil, WithDrained())
	start := time.Now()
	if _, err := p.Acquire(context.Background(), time.Second); !errors.Is(err, ErrDrained) {
		t.Fatalf("want ErrDrained, got %v", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Acquire of a drained pool waited %v", d)
	}
	time.Sleep(50 * time.Millisecond) // ten refill intervals
	if st := p.Stats(); !st.Drained || st.Frozen+st.Restoring != 0 || rt.restores.Load() != 0 {
		t.Fatalf("a drained pool restored: %+v", st)
	}
	p.Prewarm(2)
	eventually(t, "2 frozen", func() bool { return p.Stats().Frozen == 2 })
	closePool(t, p, rt)
}

// TestDrainWaitsForRoundVictims: sandboxes a refill round took out of the frozen list to
// destroy (surplus here) are waited for by Drain, which returns only once nothing lives.
func TestDrainWaitsForRoundVictims(t *testing.T) {
	rt := newFake()
	use := func(*store.Template) func() {
		return func() { time.Sleep(30 * time.Millisecond) } // a slow generation release widens the window
	}
	p := New("ns", tmpl(1), cfg(3, 3), rt, use)
	eventually(t, "3 frozen", func() bool { return p.Stats().Frozen == 3 })
	c := cfg(0, 0)
	c.Initial = 0
	p.SetConfig(c) // a round takes the 3 as surplus and destroys them one after the other
	eventually(t, "round began destroying", func() bool { return rt.destroyed.Load() >= 1 })
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, st := rt.count(), p.Stats(); n != 0 || st.Frozen != 0 {
		t.Errorf("after Drain returned: %d sandboxes live, frozen %d", n, st.Frozen)
	}
	closePool(t, p, rt)
}

// TestInitialAboveRefillBatch: initial 4 with refill_batch 2 fills to 4 over two rounds,
// and the first hit ends the initial fill.
func TestInitialAboveRefillBatch(t *testing.T) {
	rt := newFake()
	rt.delay = 10 * time.Millisecond
	c := cfg(1, 4)
	c.Initial = 4
	p := New("ns", tmpl(1), c, rt, nil)
	eventually(t, "4 frozen", func() bool { return p.Stats().Frozen == 4 })
	closePool(t, p, rt)
}

// TestMaxMemoryFromMeasuredSandboxes: a template whose memory is unknown (0, e.g. one
// from a checkpoint image) is bounded by what its sandboxes measure: 25 MiB holds two
// of 10 MiB.
func TestMaxMemoryFromMeasuredSandboxes(t *testing.T) {
	rt := newFake()
	c := cfg(4, 4)
	c.MaxMemory = 25 << 20
	tp := tmpl(1)
	tp.MemoryBytes = 0
	p := New("ns", tp, c, rt, nil)
	eventually(t, "the bound applied", func() bool { return p.Stats().Desired == 2 })
	eventually(t, "settled", func() bool { st := p.Stats(); return st.Restoring == 0 && st.Frozen <= 2 })
	if st := p.Stats(); st.Memory > c.MaxMemory {
		t.Fatalf("frozen memory %d MiB over max_memory 25 MiB", st.Memory>>20)
	}
	closePool(t, p, rt)
}

// TestAcquireNoRoom: with max_memory below one sandbox, no refill can come: Acquire
// says so at once instead of waiting acquire_timeout.
func TestAcquireNoRoom(t *testing.T) {
	rt := newFake()
	c := cfg(1, 4)
	c.MaxMemory = 5 << 20 // the template is 10 MiB
	p := New("ns", tmpl(1), c, rt, nil)
	defer closePool(t, p, rt)
	if _, err := p.Acquire(context.Background(), time.Hour); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("Acquire: %v, want ErrNoRoom", err)
	}
}

// TestWaitingCountsWhenIdle: with min 0 and idle_timeout 0 a waiting Acquire still gets
// a refill.
func TestWaitingCountsWhenIdle(t *testing.T) {
	rt := newFake()
	c := cfg(0, 4)
	c.IdleTimeout = 0
	p := New("ns", tmpl(1), c, rt, nil)
	defer closePool(t, p, rt)
	sb, err := p.Acquire(context.Background(), 10*time.Second)
	if err != nil {
		t.Fatalf("a waiting Acquire got no refill: %v", err)
	}
	_ = p.Release(context.Background(), sb)
}

// TestCloseUnused: a pool with a sandbox in use is not closed (its Creates go on being
// served); once released, it closes.
func TestCloseUnused(t *testing.T) {
	rt := newFake()
	p := New("ns", tmpl(1), cfg(2, 2), rt, nil)
	eventually(t, "2 frozen", func() bool { return p.Stats().Frozen == 2 })
	sb, err := p.Acquire(context.Background(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CloseUnused(context.Background()); !errors.Is(err, store.ErrInUse) {
		t.Fatalf("close of a pool with a sandbox in use: %v", err)
	}
	other, err := p.Acquire(context.Background(), time.Second)
	if err != nil {
		t.Fatalf("the pool was closed by a refused CloseUnused: %v", err)
	}
	for _, x := range []*Sandbox{sb, other} {
		if err := p.Release(context.Background(), x); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.CloseUnused(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Acquire(context.Background(), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("acquire after CloseUnused: %v", err)
	}
	eventually(t, "nothing live", func() bool { return rt.count() == 0 })
}
