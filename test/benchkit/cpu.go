package benchkit

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// userHZ is the unit of /proc/stat's times (USER_HZ, 100 on Linux).
const userHZ = 100

// HostBusy is the CPU time the host's cores have spent busy since boot: the sum of
// /proc/stat's cpu line but idle and iowait.
func HostBusy() (time.Duration, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseBusy(string(data))
}

func parseBusy(stat string) (time.Duration, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var ticks int64
	for i, x := range f[1:] {
		v, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: field %d of %q: %w", i+1, line, err)
		}
		// user nice system idle iowait irq softirq steal guest guest_nice: guest time is
		// already counted in user and nice.
		switch i {
		case 3, 4, 8, 9:
		default:
			ticks += v
		}
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// BusySampler reads HostBusy every few milliseconds while a run goes on, so that the
// CPU spent up to any moment of it (the last reply of concurrent starts, before their
// deletes) can be read afterwards.
type BusySampler struct {
	stop, done chan struct{}

	mu   sync.Mutex
	at   []time.Time     // guarded by mu
	busy []time.Duration // guarded by mu
	err  error           // guarded by mu
}

// StartBusySampler takes a first sample and samples every 5ms until Stop.
func StartBusySampler() *BusySampler {
	s := &BusySampler{stop: make(chan struct{}), done: make(chan struct{})}
	s.sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				s.sample()
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *BusySampler) sample() {
	b, err := HostBusy()
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return
	}
	s.at, s.busy = append(s.at, now), append(s.busy, b)
}

// Stop ends the sampling and returns the first error a sample met.
func (s *BusySampler) Stop() error {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Between is the busy CPU time from the first sample to the first sample taken at or
// after t (what the cores spent up to t, within one sampling period).
func (s *BusySampler) Between(t time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.busy) == 0 {
		return 0
	}
	for i, at := range s.at {
		if !at.Before(t) {
			return s.busy[i] - s.busy[0]
		}
	}
	return s.busy[len(s.busy)-1] - s.busy[0]
}
