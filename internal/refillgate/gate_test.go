package refillgate

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeFreezer records the state a restore's cgroup would be in.
type fakeFreezer struct {
	mu        sync.Mutex
	frozen    bool
	freezes   int
	err       error
	thawFails int // thaws that fail before one succeeds
}

func (f *fakeFreezer) Freeze() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.frozen = true
	f.freezes++
	return nil
}

func (f *fakeFreezer) Thaw() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if f.thawFails > 0 {
		f.thawFails--
		return errors.New("thaw failed")
	}
	f.frozen = false
	return nil
}

func (f *fakeFreezer) isFrozen() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.frozen
}

// clock is a fake time with timers the test fires.
type clock struct {
	mu     sync.Mutex
	t      time.Time
	timers []*timer
}

type timer struct {
	d       time.Duration
	f       func()
	stopped bool
}

func (t *timer) Stop() bool { was := !t.stopped; t.stopped = true; return was }

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func (c *clock) afterFunc(d time.Duration, f func()) stopper {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{d: d, f: f}
	c.timers = append(c.timers, t)
	return t
}

// pending returns the gate's own timers not stopped, oldest first (not the hits' holds).
func (c *clock) pending() []*timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*timer
	for _, t := range c.timers {
		if !t.stopped && t.d != hitHold {
			out = append(out, t)
		}
	}
	return out
}

// fire runs timer t as if its time came (after advancing the clock by its duration).
func (c *clock) fire(t *timer) {
	c.advance(t.d)
	t.stopped = true
	t.f()
}

func newTestGate(t *testing.T) (*Gate, *clock, *[]string) {
	t.Helper()
	c := &clock{t: time.Unix(1000, 0)}
	var errs []string
	g := New(50*time.Millisecond, 30*time.Millisecond, func(id string, err error) { errs = append(errs, id+": "+err.Error()) })
	g.now, g.afterFunc = c.now, c.afterFunc
	return g, c, &errs
}

func TestHitPausesRestoresInProgress(t *testing.T) {
	g, c, _ := newTestGate(t)
	a, b := &fakeFreezer{}, &fakeFreezer{}
	leaveA := g.Enter("a", a)
	g.Enter("b", b)
	done := g.Hit()
	if !a.isFrozen() || !b.isFrozen() {
		t.Fatalf("restores not paused during a hit: a=%v b=%v", a.isFrozen(), b.isFrozen())
	}
	c.advance(4 * time.Millisecond)
	done()
	if a.isFrozen() || b.isFrozen() {
		t.Fatalf("restores still paused after the hit: a=%v b=%v", a.isFrozen(), b.isFrozen())
	}
	if st := g.Stats(); st.Pauses != 1 || st.Paused != 4*time.Millisecond {
		t.Fatalf("Stats = %+v; want 1 pause, 4ms", st)
	}
	if p := c.pending(); len(p) != 0 {
		t.Fatalf("%d timers left after the last hit ended", len(p))
	}
	leaveA()
	done() // again: nothing
	if n := g.Stats().Pauses; n != 1 {
		t.Fatalf("a second done changed the gate: %d pauses", n)
	}
}

func TestUnendedHitEndsAfterItsHold(t *testing.T) {
	g, c, _ := newTestGate(t)
	a := &fakeFreezer{}
	g.Enter("a", a)
	g.Hit() // created, never started, never deleted
	var hold *timer
	c.mu.Lock()
	for _, t := range c.timers {
		if t.d == hitHold && !t.stopped {
			hold = t
		}
	}
	c.mu.Unlock()
	if hold == nil {
		t.Fatal("a hit has no hold")
	}
	for _, p := range c.pending() { // MaxPause, then MinRun, then a pause again
		c.fire(p)
	}
	c.fire(hold)
	if a.isFrozen() || len(c.pending()) != 0 {
		t.Fatalf("after the hold: frozen=%v, %d gate timers; want neither", a.isFrozen(), len(c.pending()))
	}
	done := g.Hit()
	if !a.isFrozen() {
		t.Fatal("the hold left the gate counting a hit")
	}
	done()
	if a.isFrozen() {
		t.Fatal("the expired hit is still counted")
	}
}

func TestOverlappingHitsResumeAtTheLast(t *testing.T) {
	g, _, _ := newTestGate(t)
	a := &fakeFreezer{}
	g.Enter("a", a)
	d1 := g.Hit()
	d2 := g.Hit()
	d1()
	if !a.isFrozen() {
		t.Fatal("resumed while a hit is still served")
	}
	d2()
	if a.isFrozen() {
		t.Fatal("still paused after every hit ended")
	}
	if n := g.Stats().Pauses; n != 1 {
		t.Fatalf("%d pauses for two overlapping hits; want 1", n)
	}
}

func TestPauseEndsAtMaxPauseAndComesBackAfterMinRun(t *testing.T) {
	g, c, _ := newTestGate(t)
	a := &fakeFreezer{}
	g.Enter("a", a)
	done := g.Hit()
	p := c.pending()
	if len(p) != 1 || p[0].d != 50*time.Millisecond {
		t.Fatalf("pending timers %+v; want one of MaxPause", p)
	}
	c.fire(p[0])
	if a.isFrozen() {
		t.Fatal("a pause outlived MaxPause")
	}
	p = c.pending()
	if len(p) != 1 || p[0].d != 30*time.Millisecond {
		t.Fatalf("pending timers %+v; want one of MinRun for the hit still served", p)
	}
	c.fire(p[0])
	if !a.isFrozen() {
		t.Fatal("not paused again after MinRun while a hit is still served")
	}
	if n := g.Stats().Pauses; n != 2 {
		t.Fatalf("%d pauses; want 2", n)
	}
	done()
	if a.isFrozen() || len(c.pending()) != 0 {
		t.Fatalf("after the hit: frozen=%v timers=%d", a.isFrozen(), len(c.pending()))
	}
}

func TestHitSoonAfterAPauseWaitsMinRun(t *testing.T) {
	g, c, _ := newTestGate(t)
	a := &fakeFreezer{}
	g.Enter("a", a)
	g.Hit()()
	c.advance(10 * time.Millisecond)
	done := g.Hit()
	if a.isFrozen() {
		t.Fatal("paused again 10ms after a pause (MinRun 30ms)")
	}
	p := c.pending()
	if len(p) != 1 || p[0].d != 20*time.Millisecond {
		t.Fatalf("pending timers %+v; want one for the 20ms left of MinRun", p)
	}
	c.fire(p[0])
	if !a.isFrozen() {
		t.Fatal("not paused once MinRun passed")
	}
	done()
	// A later hit, past MinRun, pauses at once.
	c.advance(31 * time.Millisecond)
	done = g.Hit()
	if !a.isFrozen() {
		t.Fatal("a hit past MinRun did not pause")
	}
	done()
}

func TestHitEndingBeforeMinRunCancelsTheRetry(t *testing.T) {
	g, c, _ := newTestGate(t)
	a := &fakeFreezer{}
	g.Enter("a", a)
	g.Hit()()
	c.advance(5 * time.Millisecond)
	done := g.Hit()
	retry := c.pending()
	if len(retry) != 1 {
		t.Fatalf("pending timers %+v; want the retry", retry)
	}
	done()
	// The retry's callback ran anyway (it fired while done held the lock).
	retry[0].f()
	if a.isFrozen() {
		t.Fatal("a stale retry paused the restores with no hit served")
	}
}

func TestStaleExpiryDoesNotEndANewPause(t *testing.T) {
	g, c, _ := newTestGate(t)
	a := &fakeFreezer{}
	g.Enter("a", a)
	done := g.Hit()
	expiry := c.pending()[0]
	done()
	c.advance(40 * time.Millisecond)
	done = g.Hit()
	if !a.isFrozen() {
		t.Fatal("second hit did not pause")
	}
	expiry.f() // the first pause's expiry, run late
	if !a.isFrozen() {
		t.Fatal("the first pause's expiry ended the second pause")
	}
	done()
}

func TestEnterWaitsWhilePaused(t *testing.T) {
	g, _, _ := newTestGate(t)
	done := g.Hit()
	entered := make(chan struct{})
	b := &fakeFreezer{}
	go func() {
		g.Enter("b", b)
		close(entered)
	}()
	select {
	case <-entered:
		t.Fatal("a restore began during a pause")
	case <-time.After(20 * time.Millisecond):
	}
	done()
	<-entered
	if b.isFrozen() {
		t.Fatal("a restore that entered after the pause is frozen")
	}
}

func TestLeaveWhilePausedStaysFrozen(t *testing.T) {
	g, _, _ := newTestGate(t)
	a := &fakeFreezer{}
	leave := g.Enter("a", a)
	done := g.Hit()
	leave() // the restore ended; its caller freezes it for the pool
	done()
	if !a.isFrozen() {
		t.Fatal("the gate thawed a restore that had left it (a pooled sandbox would run)")
	}
}

func TestFreezeErrorsAreReported(t *testing.T) {
	g, _, errs := newTestGate(t)
	bad := &fakeFreezer{err: errors.New("no such cgroup")}
	good := &fakeFreezer{}
	g.Enter("bad", bad)
	g.Enter("good", good)
	done := g.Hit()
	if !good.isFrozen() {
		t.Fatal("one failed freeze stopped the others")
	}
	done()
	if len(*errs) != 2 || (*errs)[0] != "bad: no such cgroup" {
		t.Fatalf("errors reported: %q; want the failed freeze and thaw of bad", *errs)
	}
}

func TestFailedThawIsRetried(t *testing.T) {
	g, _, errs := newTestGate(t)
	a := &fakeFreezer{thawFails: 2}
	g.Enter("a", a)
	g.Hit()()
	if !a.isFrozen() || len(*errs) != 1 {
		t.Fatalf("after a failed thaw: frozen=%v errors=%q", a.isFrozen(), *errs)
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.isFrozen() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if a.isFrozen() {
		t.Fatal("a restore whose thaw failed stayed frozen")
	}
}

// TestConcurrent runs hits and restores at once with real timers (for -race): when every
// hit has ended, no restore that is still registered is left frozen.
func TestConcurrent(t *testing.T) {
	g := New(2*time.Millisecond, time.Millisecond, nil)
	var wg sync.WaitGroup
	var live sync.Map
	var ended atomic.Int64
	for i := 0; i < 8; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				done := g.Hit()
				time.Sleep(100 * time.Microsecond)
				done()
			}
		}()
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				f := &fakeFreezer{}
				id := fmt.Sprint(i, "-", j)
				leave := g.Enter(id, f)
				live.Store(id, f)
				time.Sleep(200 * time.Microsecond)
				if j%2 == 0 {
					leave()
					live.Delete(id)
					ended.Add(1)
				}
			}
		}(i)
	}
	wg.Wait()
	live.Range(func(k, v any) bool {
		if v.(*fakeFreezer).isFrozen() {
			t.Errorf("restore %v left frozen with no hit served", k)
		}
		return true
	})
	if ended.Load() != 80 {
		t.Fatalf("%d restores ended; want 80", ended.Load())
	}
}
