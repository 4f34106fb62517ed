// Package test holds warm's integration tests: real containerd, runc and CRIU, started in an
// isolated root by the harness. Every lifecycle case runs against io.containerd.runc.v2
// and io.containerd.warm.v2.
package test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/warmshim/warm/test/harness"
)

// BusyboxRef is the locally built busybox image every case runs.
const BusyboxRef = "docker.io/warmtest/busybox:1"

// Runtimes is the parity table's second axis.
var Runtimes = []string{harness.Runc, harness.Warm}

var (
	cd        *harness.Containerd // the suite's containerd
	skipWhy   string              // why the integration tests cannot run here, if they cannot
	suiteDir  string
	namespace string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		// Benchmarks run the shim at info, the level runc's shim logs at.
		harness.WarmLogLevel = "info"
	}
	required := os.Getenv("WARM_INTEGRATION") == "1"
	env, err := harness.FindEnv()
	switch {
	case os.Geteuid() != 0:
		skipWhy = "integration tests need root (containerd, runc and CRIU); run `sudo make test`"
	case err != nil:
		skipWhy = "integration tests need the real stack: " + err.Error()
	}
	if skipWhy != "" {
		if required {
			fmt.Fprintln(os.Stderr, "WARM_INTEGRATION=1 but:", skipWhy)
			return 1
		}
		// Let each test report the reason as its skip.
		return m.Run()
	}

	// A short path: shim sockets live under it and unix socket paths are limited.
	suiteDir, err = os.MkdirTemp("/tmp", "warm-it-")
	if err == nil {
		// Searchable, not listable, as a node's /run: containers in a user namespace
		// reach their bundles under it.
		err = os.Chmod(suiteDir, 0o711)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	namespace = fmt.Sprintf("warmtest-%d", os.Getpid())
	harness.RefillPause = "true"
	cd, err = harness.Start(env, suiteDir, namespace)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start containerd:", err)
		os.RemoveAll(suiteDir)
		return 1
	}
	code := func() int {
		if err := importImages(); err != nil {
			fmt.Fprintln(os.Stderr, "images:", err)
			return 1
		}
		return m.Run()
	}()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- containerd log (last lines) ---\n%s\n", cd.LogTail(80))
	}
	// Keep containerd's log (it holds the shims' logs too) for a look after the run.
	if data, err := os.ReadFile(cd.LogPath); err == nil {
		_ = os.WriteFile(filepath.Join(os.TempDir(), "warm-it-containerd.log"), data, 0o600)
	}
	if err := teardown(); err != nil {
		fmt.Fprintln(os.Stderr, "teardown:", err)
		code = 1
	}
	return code
}

func importImages() error {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), namespace), 2*time.Minute)
	defer cancel()
	client, err := cd.Client()
	if err != nil {
		return err
	}
	defer client.Close()
	files, err := harness.BusyboxFiles()
	if err != nil {
		return err
	}
	return harness.ImportImage(ctx, client, BusyboxRef, files, ocispec.ImageConfig{
		Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Cmd: []string{"sh"},
	})
}

// teardown removes every container of the suite, stops containerd and fails the suite if
// anything was left behind.
func teardown() error {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), namespace), 2*time.Minute)
	defer cancel()
	var errs []string
	if client, err := cd.Client(); err == nil {
		containers, _ := client.Containers(ctx)
		for _, c := range containers {
			info, _ := c.Info(ctx)
			errs = append(errs, fmt.Sprintf("container left by a test: %s %v", c.ID(), info.Labels))
			if t, err := c.Task(ctx, nil); err == nil {
				_, _ = t.Delete(ctx, containerd.WithProcessKill)
			}
			_ = c.Delete(ctx, containerd.WithSnapshotCleanup)
		}
		// The pool shim stays up for its pools until told to drain them and go.
		if _, err := os.Stat(filepath.Join(cd.WarmRun, namespace, "ctl.sock")); err == nil {
			if err := harness.NewCtl(cd.WarmRun, namespace).Do("POST", "/shutdown", nil); err != nil {
				errs = append(errs, "pool shim shutdown: "+err.Error())
			}
		}
		// Pooled sandboxes' snapshots are held by leases named warm-sandbox-*.
		if ls, err := client.LeasesService().List(ctx); err == nil {
			for _, l := range ls {
				if strings.HasPrefix(l.ID, "warm-sandbox-") {
					errs = append(errs, "lease "+l.ID)
				}
			}
		}
		imgs, _ := client.ImageService().List(ctx)
		for _, im := range imgs {
			_ = client.ImageService().Delete(ctx, im.Name, imagesSync())
		}
		client.Close()
	}
	_ = cd.Stop()
	harness.RemoveCNIRules(namespace)
	if out, err := exec.Command("iptables", "-t", "nat", "-S").Output(); err == nil && strings.Contains(string(out), namespace) {
		errs = append(errs, "iptables nat rules naming "+namespace)
	}
	// Shims exit on their own once their containers are gone; give them a moment.
	var leaks []string
	for i := 0; i < 100; i++ {
		harness.RemoveNamespaceCgroups(namespace)
		if leaks = harness.Leaks(suiteDir, namespace); len(leaks) == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	errs = append(errs, leaks...)
	// Keep the pool shim's own log, up to its exit, for a look after the run.
	if data, err := os.ReadFile(filepath.Join(cd.WarmRun, namespace, "pool-shim.log")); err == nil {
		_ = os.WriteFile(filepath.Join(os.TempDir(), "warm-it-pool-shim.log"), data, 0o600)
	}
	if err := cd.Release(); err != nil {
		errs = append(errs, err.Error())
	}
	if err := os.RemoveAll(suiteDir); err != nil {
		errs = append(errs, "remove "+suiteDir+": "+err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("left behind:\n  %s", strings.Join(errs, "\n  "))
	}
	return nil
}

// need skips t when the real stack is missing, saying what is missing.
func need(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
}

// tempDir is a per-test directory inside the suite directory (short, cleaned at the end).
func tempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp(suiteDir, "t-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func shortName(t *testing.T) string {
	n := strings.ToLower(filepath.Base(t.Name()))
	n = strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			return r
		}
		return '-'
	}, n)
	for strings.Contains(n, "--") {
		n = strings.ReplaceAll(n, "--", "-")
	}
	if len(n) > 30 {
		n = n[:30]
	}
	return fmt.Sprintf("%s-%d", strings.Trim(n, "-"), time.Now().UnixNano()%1000000)
}
