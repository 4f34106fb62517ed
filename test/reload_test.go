package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warmshim/warm/test/harness"
)

// suiteConfig returns a warm.toml of the test's own and a function that writes it (a new
// file each time, renamed into place) as the suite's configuration followed by extra.
func suiteConfig(t *testing.T) (path string, write func(extra string)) {
	t.Helper()
	base, err := os.ReadFile(cd.WarmCfg)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(tempDir(t), "warm.toml")
	return path, func(extra string) {
		t.Helper()
		if err := os.WriteFile(path+".new", append(append([]byte{}, base...), extra...), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConfigReload: the pool shim follows an edit of its warm.toml without a Create (a
// pool grows to its new min), keeps its configuration when the file is broken (warmctl
// reload names the key), and takes a fix through warmctl reload (the pool shrinks to
// its new max).
func TestConfigReload(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "reload-" + shortName(t)
	cfgPath, writeCfg := suiteConfig(t)
	write := func(section string) { writeCfg("\n[pools." + name + "]\n" + section) }
	write("min = 2\n")
	e.warmCfg = cfgPath
	makeTemplate(t, e, name)
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	frozen := func(n int) func() bool {
		return func() bool {
			st, ok, err := ctl.Pool(name)
			return err == nil && ok && st.Frozen == n && st.Restoring == 0
		}
	}
	// An edit, and no Create after it.
	write("min = 4\nmax = 5\n")
	waitFor(t, "the pool grown to its new min of 4", frozen(4))
	// A broken file: nothing changes, and warmctl says why.
	write("min = 1\nmax = 1\ninitial = 1\nmni = 3\n")
	warmctl := func(args ...string) (string, error) {
		out, err := exec.Command(cd.Env.Warmctl, append([]string{"--run-dir", cd.WarmRun, "-n", cd.Namespace}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := warmctl("reload"); err == nil || !strings.Contains(out, "mni") {
		t.Fatalf("warmctl reload of a broken file: %v\n%s", err, out)
	}
	// Not taken: the pool still aims at 4 (its desired size follows its configuration
	// at once).
	if st, _, _ := ctl.Pool(name); st.Desired != 4 || st.Frozen != 4 {
		t.Fatalf("a broken file changed the pool: %+v", st)
	}
	// Fixed: taken at once by warmctl reload.
	write("min = 1\nmax = 1\ninitial = 1\n")
	if out, err := warmctl("reload"); err != nil || !strings.Contains(out, "reloaded "+cfgPath) {
		t.Fatalf("warmctl reload: %v\n%s", err, out)
	}
	waitFor(t, "the pool shrunk to its new max of 1", frozen(1))
}

// TestBootShimWaitsForItsImport: a pool shim started at boot whose configuration names a
// checkpoint image not on the node yet stays up retrying the import (it used to exit
// after 10 minutes, its retries with it: TestImportsHoldThePoolShim checks that it holds
// on), and goes once the configuration no longer names it; warmctl reload then checks
// the file. (Its own namespace: the suite's holds other tests' templates.)
func TestBootShimWaitsForItsImport(t *testing.T) {
	need(t)
	ns := "boot-" + shortName(t)
	cfgPath, write := suiteConfig(t)
	write("\n[pools.later]\nimage = \"localhost/warm-not-pulled:1\"\n")
	out, err := exec.Command(cd.Env.Warmctl, "-n", ns, "start", "--address", cd.Address,
		"--socket-dir", filepath.Join(suiteDir, "s"), "--config", cfgPath, "--shim", cd.Env.Shim, "--wait", "30s").CombinedOutput()
	if err != nil {
		t.Fatalf("warmctl start: %v\n%s", err, out)
	}
	shim := func() int {
		for _, sp := range harness.ShimProcesses(suiteDir) {
			a := strings.Join(sp.Args, " ")
			if strings.Contains(a, "-namespace "+ns+" ") && strings.Contains(a, "-id warm-pool") {
				return sp.Pid
			}
		}
		return 0
	}
	t.Cleanup(func() {
		if pid := shim(); pid != 0 {
			_ = harness.NewCtl(cd.WarmRun, ns).Do("POST", "/shutdown", nil)
			for deadline := time.Now().Add(30 * time.Second); shim() != 0 && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
			}
		}
		_ = os.RemoveAll(filepath.Join(cd.WarmRun, ns))
	})
	logPath := filepath.Join(cd.WarmRun, ns, "pool-shim.log")
	waitFor(t, "the import failed and is retried", func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "template from checkpoint image: retrying")
	})
	if shim() == 0 {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("the boot pool shim exited while its import is retried:\n%s", tail(string(b), 3000))
	}
	// The pool is no longer configured: nothing holds the shim.
	write("")
	waitFor(t, "the boot pool shim gone", func() bool { return shim() == 0 })
	// No pool shim: warmctl reload checks the file the next one reads.
	cmd := exec.Command(cd.Env.Warmctl, "-n", ns, "reload")
	cmd.Env = append(os.Environ(), "WARM_CONFIG="+cfgPath)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), cfgPath+" is valid") {
		t.Fatalf("warmctl reload without a pool shim: %v\n%s", err, out)
	}
	write("mni = 1\n")
	if out, err := cmd2(cmd).CombinedOutput(); err == nil || !strings.Contains(string(out), "mni") {
		t.Fatalf("warmctl reload of a broken file without a pool shim: %v\n%s", err, out)
	}
}

// cmd2 is a fresh copy of an exec.Cmd that ran (one runs only once).
func cmd2(c *exec.Cmd) *exec.Cmd {
	n := exec.Command(c.Path, c.Args[1:]...)
	n.Env = c.Env
	return n
}
