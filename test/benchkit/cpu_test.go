package benchkit

import (
	"testing"
	"time"
)

func TestParseBusy(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	got, err := parseBusy("cpu  100 5 50 9000 40 3 2 1 7 1\ncpu0 1 2 3 4\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := (100 + 5 + 50 + 3 + 2 + 1) * 10 * time.Millisecond; got != want {
		t.Fatalf("busy %v, want %v", got, want)
	}
	for _, bad := range []string{"", "intr 1 2 3 4 5", "cpu 1 2 x 4 5"} {
		if _, err := parseBusy(bad); err == nil {
			t.Errorf("parseBusy(%q): no error", bad)
		}
	}
}

func TestBusySamplerBetween(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := &BusySampler{
		at:   []time.Time{t0, t0.Add(5 * time.Millisecond), t0.Add(10 * time.Millisecond)},
		busy: []time.Duration{time.Second, time.Second + 8*time.Millisecond, time.Second + 20*time.Millisecond},
	}
	for _, c := range []struct {
		at   time.Time
		want time.Duration
	}{
		{t0, 0},
		{t0.Add(time.Millisecond), 8 * time.Millisecond},
		{t0.Add(10 * time.Millisecond), 20 * time.Millisecond},
		{t0.Add(time.Hour), 20 * time.Millisecond},
	} {
		if got := s.Between(c.at); got != c.want {
			t.Errorf("Between(t0+%v) = %v, want %v", c.at.Sub(t0), got, c.want)
		}
	}
}
