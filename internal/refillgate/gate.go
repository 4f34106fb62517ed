// Package refillgate pauses the pool refills in progress while the shim serves a pool
// hit. A refill's restore (CRIU and the tasks it restores) runs in the new sandbox's
// cgroup, which competes for the CPU as a group of its own: a nice value given to it
// counts inside that group only, so on a small node a restore can take a core from the
// Create and Start it is there to serve. The pool already waits for hits to start
// before it begins a refill; the gate stops the restores that were already running, by
// freezing their cgroups, for as long as a hit is being served.
//
// A pause never lasts longer than MaxPause, and after one the restores run for at least
// MinRun before the next: a steady stream of hits slows refills down (by half at most)
// and never stops them, so a Create waiting for a refill is served.
package refillgate

import (
	"sync"
	"time"
)

// Freezer stops and resumes one restore in progress (its cgroup). Both are called with
// the gate's lock held and must not block: write the freezer, do not wait for it.
type Freezer interface {
	Freeze() error
	Thaw() error
}

// Default bounds: a hit's Create and Start take the shim a few milliseconds and
// containerd a few more between them; a slow one is let go at MaxPause.
const (
	DefaultMaxPause = 50 * time.Millisecond
	DefaultMinRun   = 50 * time.Millisecond
)

// hitHold ends a hit whose end was never reported (a container created and never
// started, whose Delete comes later or never): as the pool's own hold, a second.
const hitHold = time.Second

// Gate counts the hits being served and pauses the registered restores while there
// are any. The zero value is not usable: call New.
type Gate struct {
	maxPause, minRun time.Duration
	now              func() time.Time
	afterFunc        func(time.Duration, func()) stopper
	onError          func(id string, err error)

	mu        sync.Mutex
	resumed   *sync.Cond         // broadcast on resume; uses mu
	restores  map[string]Freezer // guarded by mu
	hits      int                // guarded by mu
	paused    bool               // guarded by mu
	resumedAt time.Time          // guarded by mu
	timer     stopper            // guarded by mu: ends a pause, or starts one after MinRun
	timerGen  uint64             // guarded by mu: the timer's; a stopped timer's callback that ran anyway finds it changed
	pauses    int64              // guarded by mu
	pausedFor time.Duration      // guarded by mu
	pausedAt  time.Time          // guarded by mu
}

type stopper interface{ Stop() bool }

// New returns a gate with the given bounds (the defaults where zero). onError, if not
// nil, hears of a freeze or thaw that failed: a restore not frozen runs on; a thaw is
// tried again every 10 ms (for a second) while the restore is registered and no pause
// is on, and again at the next pause's end.
func New(maxPause, minRun time.Duration, onError func(id string, err error)) *Gate {
	if maxPause <= 0 {
		maxPause = DefaultMaxPause
	}
	if minRun <= 0 {
		minRun = DefaultMinRun
	}
	g := &Gate{
		maxPause: maxPause, minRun: minRun, now: time.Now, onError: onError,
		afterFunc: func(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) },
		restores:  map[string]Freezer{},
	}
	g.resumed = sync.NewCond(&g.mu)
	return g
}

// Hit records a hit being served (its sandbox acquired) and pauses the restores in
// progress, unless they were paused less than MinRun ago. done ends the hit (at its
// Start, or when its Create failed); calling it again does nothing. A hit not ended
// within a second ends on its own. A nil gate pauses nothing.
func (g *Gate) Hit() (done func()) {
	if g == nil {
		return func() {}
	}
	var once sync.Once
	var hold stopper
	end := func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			hold.Stop()
			g.hits--
			if g.hits == 0 {
				g.resumeLocked()
				g.stopTimerLocked()
			}
		})
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hits++
	hold = g.afterFunc(hitHold, end)
	g.tryPauseLocked()
	return end
}

// Enter registers a restore about to begin, as id. It waits while the gate is paused (a
// restore does not start during a hit). leave unregisters it: call it once the restore
// ended, before freezing the sandbox for the pool. A restore that leaves while paused
// stays frozen: the gate never thaws it.
func (g *Gate) Enter(id string, f Freezer) (leave func()) {
	g.mu.Lock()
	for g.paused {
		g.resumed.Wait()
	}
	g.restores[id] = f
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		delete(g.restores, id)
		g.mu.Unlock()
	}
}

// Stats is what the gate did since the shim started.
type Stats struct {
	Pauses int64         `json:"pauses"`    // pauses of the restores in progress
	Paused time.Duration `json:"paused_ns"` // their time in all
}

// Stats reports how many pauses the gate made and how long they lasted in all. A nil
// gate made none.
func (g *Gate) Stats() Stats {
	if g == nil {
		return Stats{}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	total := g.pausedFor
	if g.paused {
		total += g.now().Sub(g.pausedAt)
	}
	return Stats{Pauses: g.pauses, Paused: total}
}

func (g *Gate) tryPauseLocked() {
	if g.paused || g.hits == 0 {
		return
	}
	now := g.now()
	if wait := g.minRun - now.Sub(g.resumedAt); !g.resumedAt.IsZero() && wait > 0 {
		if g.timer == nil {
			g.scheduleLocked(wait, g.retry)
		}
		return
	}
	g.paused, g.pausedAt = true, now
	g.pauses++
	for id, f := range g.restores {
		if err := f.Freeze(); err != nil && g.onError != nil {
			g.onError(id, err)
		}
	}
	g.scheduleLocked(g.maxPause, g.expire)
}

func (g *Gate) resumeLocked() {
	if !g.paused {
		return
	}
	for id, f := range g.restores {
		if err := f.Thaw(); err != nil {
			if g.onError != nil {
				g.onError(id, err)
			}
			go g.retryThaw(id, f)
		}
	}
	g.paused = false
	g.resumedAt = g.now()
	g.pausedFor += g.resumedAt.Sub(g.pausedAt)
	g.resumed.Broadcast()
}

func (g *Gate) stopTimerLocked() {
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	g.timerGen++
}

// scheduleLocked replaces the timer with one that calls f (with the lock held) after d.
func (g *Gate) scheduleLocked(d time.Duration, f func()) {
	g.stopTimerLocked()
	gen := g.timerGen
	g.timer = g.afterFunc(d, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.timerGen != gen {
			return // stopped or replaced after it fired
		}
		g.timer = nil
		f()
	})
}

// expire ends a pause that reached MaxPause; hits still being served pause again after
// MinRun.
func (g *Gate) expire() {
	g.resumeLocked()
	if g.hits > 0 {
		g.scheduleLocked(g.minRun, g.retry)
	}
}

// retry pauses again for hits still being served once the restores ran MinRun.
func (g *Gate) retry() { g.tryPauseLocked() }

// retryThaw thaws a restore whose thaw failed, unless it left or a pause began.
func (g *Gate) retryThaw(id string, f Freezer) {
	for i := 0; i < 100; i++ {
		time.Sleep(10 * time.Millisecond)
		g.mu.Lock()
		if g.restores[id] != f || g.paused {
			g.mu.Unlock()
			return
		}
		err := f.Thaw()
		g.mu.Unlock()
		if err == nil {
			return
		}
	}
}
