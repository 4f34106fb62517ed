package hwbreak

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func fakeProbe(works bool, err error, calls *int) func() (bool, error) {
	return func() (bool, error) {
		*calls++
		return works, err
	}
}

func TestApplySetsTheSwitchWhereBreakpointsDoNotFire(t *testing.T) {
	t.Setenv(EnvVar, "")
	t.Setenv(EnvMarker, "")
	dir := filepath.Join(t.TempDir(), "run")
	calls := 0
	r := apply(dir, fakeProbe(false, nil, &calls))
	if r.Works || !r.Set || r.Cached || calls != 1 {
		t.Fatalf("result %+v after %d probes, want broken, set, probed once", r, calls)
	}
	if got := os.Getenv(EnvVar); got != NoBreakpoints {
		t.Fatalf("%s=%q, want %q", EnvVar, got, NoBreakpoints)
	}
	if !Broken() {
		t.Fatal("Broken() = false after Apply set the switch")
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory mode %v, want 0700", fi.Mode().Perm())
	}

	// The next process of this boot reads the answer instead of probing.
	os.Unsetenv(EnvVar)
	os.Unsetenv(EnvMarker)
	r = apply(dir, fakeProbe(true, nil, &calls))
	if r.Works || !r.Set || !r.Cached || calls != 1 {
		t.Fatalf("result %+v after %d probes, want the cached broken answer", r, calls)
	}
}

func TestApplyLeavesWorkingHostsAlone(t *testing.T) {
	t.Setenv(EnvVar, "")
	t.Setenv(EnvMarker, "")
	os.Unsetenv(EnvVar)
	dir := t.TempDir()
	calls := 0
	for i := 0; i < 2; i++ {
		r := apply(dir, fakeProbe(true, nil, &calls))
		if !r.Works || r.Set {
			t.Fatalf("result %+v, want works, nothing set", r)
		}
	}
	if calls != 1 {
		t.Fatalf("%d probes, want 1 (the second answer from the cache)", calls)
	}
	if v, ok := os.LookupEnv(EnvVar); ok {
		t.Fatalf("%s=%q set on a host whose breakpoints fire", EnvVar, v)
	}
}

func TestApplyIgnoresAnotherBootsAnswer(t *testing.T) {
	t.Setenv(EnvVar, "")
	os.Unsetenv(EnvVar)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, cacheName), []byte("00000000-0000-0000-0000-000000000000 broken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	calls := 0
	r := apply(dir, fakeProbe(true, nil, &calls))
	if !r.Works || r.Cached || calls != 1 {
		t.Fatalf("result %+v after %d probes, want a new probe (the cache is another boot's)", r, calls)
	}
	if works, ok := readCache(dir, thisBoot(t)); !ok || !works {
		t.Fatalf("cache after the probe: works=%v ok=%v, want this boot's answer", works, ok)
	}
}

func TestApplyKeepsTheOperatorsSetting(t *testing.T) {
	t.Setenv(EnvVar, "131")
	calls := 0
	r := apply(t.TempDir(), fakeProbe(false, nil, &calls))
	if r.Kept != "131" || r.Set || calls != 0 {
		t.Fatalf("result %+v after %d probes, want the operator's 131 kept and no probe", r, calls)
	}
	if got := os.Getenv(EnvVar); got != "131" {
		t.Fatalf("%s=%q, want the operator's 131", EnvVar, got)
	}
}

func TestApplyKeepsCRIUsDefaultWhenTheProbeFails(t *testing.T) {
	t.Setenv(EnvVar, "")
	os.Unsetenv(EnvVar)
	dir := t.TempDir()
	calls := 0
	r := apply(dir, fakeProbe(false, errors.New("no true"), &calls))
	if !r.Works || r.Set || r.Err == nil {
		t.Fatalf("result %+v, want CRIU's default kept and the error reported", r)
	}
	if _, ok := readCache(dir, thisBoot(t)); ok {
		t.Fatal("a failed probe's answer was cached")
	}
}

// TestProbe runs the real probe: it must give an answer, whichever this host's is.
func TestProbe(t *testing.T) {
	works, err := Probe()
	if runtime.GOARCH != "amd64" {
		if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("Probe on %s: %v, want ErrUnsupported", runtime.GOARCH, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	t.Logf("hardware breakpoints fire on this host: %v", works)
}

func thisBoot(t *testing.T) string {
	t.Helper()
	boot, err := bootID()
	if err != nil {
		t.Fatal(err)
	}
	return boot
}
