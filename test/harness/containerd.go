// Package harness starts an isolated containerd (own root, state, sockets and runc root in
// a temporary directory, never the host's /run/containerd) for warm's integration tests,
// builds small OCI images locally, and checks that nothing was left behind.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/warmshim/warm/internal/childsignals"
	"github.com/warmshim/warm/internal/hwbreak"
)

// Runtime names.
const (
	Warm = "io.containerd.warm.v2"
	Runc = "io.containerd.runc.v2"
)

// Env is the set of tools the harness needs, found in PATH (the project's setup script
// puts them there).
type Env struct {
	Containerd, Ctr, Runc, RuncShim, Criu, Shim, Nerdctl, Warmctl string
}

// FindEnv looks up the tools; the error names every missing one.
func FindEnv() (Env, error) {
	var e Env
	var missing []string
	look := func(dst *string, name string) {
		p, err := exec.LookPath(name)
		if err != nil {
			missing = append(missing, name)
			return
		}
		*dst = p
	}
	look(&e.Containerd, "containerd")
	look(&e.Ctr, "ctr")
	look(&e.Runc, "runc")
	look(&e.RuncShim, "containerd-shim-runc-v2") // the parity table's other runtime
	look(&e.Criu, "criu")
	look(&e.Shim, "containerd-shim-warm-v2")
	look(&e.Nerdctl, "nerdctl")
	look(&e.Warmctl, "warmctl")
	if len(missing) > 0 {
		return e, fmt.Errorf("not in PATH: %s (run `make test`, which installs them with scripts/setup.sh)", strings.Join(missing, ", "))
	}
	return e, nil
}

// Containerd is a containerd daemon the harness started.
type Containerd struct {
	Env       Env
	Dir       string // everything lives under it
	Address   string // gRPC socket
	Namespace string
	RuncRoot  string // runc --root for both runtimes
	WarmCfg   string // warm.toml passed as ConfigPath
	WarmState string // warm's state_dir (templates)
	WarmRun   string // warm's run_dir (sandboxes, control socket)
	State     string // containerd's state directory (bundles)
	LogPath   string

	config string
	runDir string // a tmpfs where it could mount one (see mountRunDir)
	cmd    *exec.Cmd
	done   chan error
}

// RunDirName is the directory under the harness's dir that holds what a node keeps on
// /run, a tmpfs: containerd's state (bundles), the runc root and warm's run_dir.
const RunDirName = "run"

// mountRunDir makes dir/run a tmpfs (as root): on a disk file system every file a
// Create writes in a bundle or runc's state needs a new inode, which the suite's churn
// makes slow (ext4: a third of a pool hit's shim-side time here), and a node has them on
// /run. containerd's root, the images and warm's templates stay on disk, as on a node.
func mountRunDir(dir string) (string, error) {
	run := filepath.Join(dir, RunDirName)
	// 0711, as /run and containerd's state directory on a node: a container in a user
	// namespace (its root is not the host's) must reach its bundle's rootfs.
	if err := os.MkdirAll(run, 0o711); err != nil {
		return "", err
	}
	if os.Geteuid() != 0 {
		return run, nil
	}
	if err := syscall.Mount("tmpfs", run, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=0711"); err != nil {
		return "", fmt.Errorf("mount tmpfs on %s: %w", run, err)
	}
	return run, nil
}

// Release unmounts the tmpfs of dir/run (after Stop and the check for leaks, which
// reports any mount below it); what was in it is gone.
func (c *Containerd) Release() error {
	if os.Geteuid() != 0 {
		return nil
	}
	if err := syscall.Unmount(c.runDir, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("unmount %s: %w", c.runDir, err)
	}
	return nil
}

// WarmLogLevel is warm's log_level in the harness config: debug for tests; benchmarks
// set info, the level runc's shim logs at. containerd's own level follows it (debug, or
// info): containerd starts its shims with -debug at debug, and a shim logging at debug
// is slower than one on a node, whose containerd logs at info.
var WarmLogLevel = "debug"

// RefillPause is refill_pause in warm.toml: "true", "false", or "" for warm's default.
// The integration tests turn it on (so that they exercise the gate); the bench command
// keeps the default.
var RefillPause = ""

// poolConfig is the pool section of the suite's warm.toml: small pools that refill fast.
const poolConfig = `
[pool]
min = 2
max = 5
initial = 2
refill_batch = 3
refill_interval = "50ms"
acquire_timeout = "2s"
# nerdctl sets HOSTNAME per container; the restored process keeps the template's.
allow_env = ["HOSTNAME"]

# BenchmarkPoolHitConcurrent's pool: ten at once.
[pools.benchconc]
max = 10
`

// useCriuBreakpoints gives containerd (and so runc's shim, warm's, runc and CRIU) the
// environment warm's start action gives its shim: CRIU_FAULT=130 where the host's
// hardware breakpoints do not fire (internal/hwbreak), without which every CRIU dump
// here, runc's shim's included, would wait forever.
func useCriuBreakpoints() {
	hwbreakOnce.Do(func() {
		r := hwbreak.Apply(hwbreak.TestCacheDir())
		switch {
		case r.Err != nil:
			fmt.Fprintf(os.Stderr, "harness: %v; CRIU keeps its default\n", r.Err)
		case r.Set:
			fmt.Fprintf(os.Stderr, "harness: hardware breakpoints do not fire on this host: CRIU runs with %s=%s\n", hwbreak.EnvVar, hwbreak.NoBreakpoints)
		}
	})
}

var hwbreakOnce sync.Once

// Start launches containerd in dir. The shim socket directory, the runc root and the
// warm config all live inside dir.
func Start(env Env, dir, namespace string) (*Containerd, error) {
	return StartWith(env, dir, namespace, poolConfig)
}

// StartWith is Start with the given [pool] section (TOML) in warm.toml.
func StartWith(env Env, dir, namespace, pools string) (*Containerd, error) {
	// containerd, runc's shim and runc pass an ignored signal on to containers now and
	// then (seen: a test's `trap ... HUP` refused under nohup, with runc's shim and
	// warm's alike).
	childsignals.Default(syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT)
	useCriuBreakpoints()
	run, err := mountRunDir(dir)
	if err != nil {
		return nil, err
	}
	c := &Containerd{
		Env:       env,
		Dir:       dir,
		Address:   filepath.Join(dir, "c.sock"),
		Namespace: namespace,
		RuncRoot:  filepath.Join(run, "runc"),
		WarmCfg:   filepath.Join(dir, "warm.toml"),
		LogPath:   filepath.Join(dir, "containerd.log"),
		config:    filepath.Join(dir, "config.toml"),
		runDir:    run,
	}
	c.WarmState, c.WarmRun = filepath.Join(dir, "warm-state"), filepath.Join(run, "warm-run")
	c.State = filepath.Join(run, "state")
	// WARM_TEST_CGROUP_FAVORDYNMODS=1 lets the pool shim remount a cgroup v2 host's
	// hierarchy with favordynmods (the device check; never on a shared host).
	dyn := os.Getenv("WARM_TEST_CGROUP_FAVORDYNMODS") == "1"
	level := WarmLogLevel
	if l := os.Getenv("WARM_TEST_LOG_LEVEL"); l != "" { // e.g. debug: a hit's phases in the log
		level = l
	}
	ctrdLevel := "info"
	if level == "debug" || level == "trace" {
		ctrdLevel = "debug"
	}
	extra := ""
	if dyn {
		extra = "cgroup_favordynmods = true\n"
	}
	// WARM_TEST_REFILL_PAUSE=true or false overrides RefillPause (to compare the two).
	pause := RefillPause
	if v := os.Getenv("WARM_TEST_REFILL_PAUSE"); v == "true" || v == "false" {
		pause = v
	}
	if pause != "" {
		extra += "refill_pause = " + pause + "\n"
	}
	warm := fmt.Sprintf("runc = %q\nrunc_root = %q\ncriu = %q\nlog_level = %q\nstate_dir = %q\nrun_dir = %q\n%s%s",
		env.Runc, c.RuncRoot, env.Criu, level, c.WarmState, c.WarmRun, extra, pools)
	if err := os.WriteFile(c.WarmCfg, []byte(warm), 0o600); err != nil {
		_ = c.Release()
		return nil, err
	}
	cfg := fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.sandbox.controller.v1.shim", "io.containerd.nri.v1.nri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  level = %q
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = %q
  env = ["WARM_CONFIG=%s"]
`, filepath.Join(dir, "root"), c.State, c.Address, c.Address+".ttrpc", ctrdLevel, filepath.Join(dir, "s"), c.WarmCfg)
	if err := os.WriteFile(c.config, []byte(cfg), 0o600); err != nil {
		_ = c.Release()
		return nil, err
	}
	if err := c.start(); err != nil {
		_ = c.stop()
		_ = c.Release()
		return nil, err
	}
	return c, nil
}

func (c *Containerd) start() error {
	logf, err := os.OpenFile(c.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	// containerd extracts a checkpoint named at Create (ctr c restore, a restore through
	// the task API) into os.MkdirTemp($XDG_RUNTIME_DIR, "ctrd-checkpoint") and never
	// removes it: keep those under dir, which the suite removes, not in /tmp.
	xdg := filepath.Join(c.Dir, "xdg")
	if err := os.MkdirAll(xdg, 0o700); err != nil {
		logf.Close()
		return err
	}
	cmd := exec.Command(c.Env.Containerd, "--config", c.config)
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+xdg)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	logf.Close()
	c.cmd = cmd
	c.done = make(chan error, 1)
	go func() { c.done <- cmd.Wait() }()

	// Ready when a client can talk to it.
	deadline := time.Now().Add(60 * time.Second)
	for {
		cl, err := containerd.New(c.Address, containerd.WithTimeout(time.Second))
		if err == nil {
			ok, serr := cl.IsServing(context.Background())
			cl.Close()
			if serr == nil && ok {
				return nil
			}
		}
		select {
		case err := <-c.done:
			return fmt.Errorf("containerd exited: %v; log: %s", err, c.LogTail(20))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not serving after 60s; log: %s", c.LogTail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Restart stops containerd (as an operator would: SIGTERM) and starts it again with the
// same root and state; running tasks and their shims stay up.
func (c *Containerd) Restart() error {
	if err := c.stop(); err != nil {
		return err
	}
	return c.start()
}

func (c *Containerd) stop() error {
	if c.cmd == nil {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	c.cmd = nil
	return nil
}

// Stop stops containerd.
func (c *Containerd) Stop() error { return c.stop() }

// Pid is containerd's process id (0 when stopped).
func (c *Containerd) Pid() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Client returns a client for the harness namespace.
func (c *Containerd) Client() (*containerd.Client, error) {
	return containerd.New(c.Address, containerd.WithDefaultNamespace(c.Namespace))
}

// Context returns a context in the harness namespace.
func (c *Containerd) Context(parent context.Context) context.Context {
	return namespaces.WithNamespace(parent, c.Namespace)
}

// Ctr runs ctr against this containerd and returns its combined output.
func (c *Containerd) Ctr(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.Env.Ctr, append([]string{"--address", c.Address, "--namespace", c.Namespace}, args...)...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	err := cmd.Run()
	return dropDeprecation(out.String()), err
}

// dropDeprecation removes containerd's cgroup v1 deprecation warning, which ctr prints on
// every command on a cgroup v1 host.
func dropDeprecation(s string) string {
	lines := strings.SplitAfter(s, "\n")
	kept := lines[:0]
	for _, l := range lines {
		if !strings.Contains(l, "DEPRECATION: The support for cgroup v1") {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "")
}

// RuntimeFlags are the ctr run flags that select a runtime and keep it inside the harness.
func (c *Containerd) RuntimeFlags(runtime string) []string {
	if runtime == Warm {
		return []string{"--runtime", Warm, "--runtime-config-path", c.WarmCfg}
	}
	return []string{"--runtime", Runc, "--runc-binary", c.Env.Runc, "--runc-root", c.RuncRoot}
}

// LogTail returns the last n lines of containerd's log (which includes the shims' logs).
// LogLines counts the lines of containerd's log (which carries the shims' logs) that
// hold every one of parts.
func (c *Containerd) LogLines(parts ...string) int {
	data, _ := os.ReadFile(c.LogPath)
	n := 0
	for _, l := range strings.Split(string(data), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			n++
		}
	}
	return n
}

func (c *Containerd) LogTail(n int) string {
	data, _ := os.ReadFile(c.LogPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ExitCode returns the exit status of a finished command's error, or -1.
func ExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

// ShimStacks makes the shims serving container id dump their goroutines (SIGQUIT, which
// also ends them) and returns what reached containerd's log after it: for a test that
// found a shim stuck.
func (c *Containerd) ShimStacks(id string) string {
	before, _ := os.Stat(c.LogPath)
	for _, sp := range ShimProcesses(c.Dir) {
		if strings.Contains(strings.Join(sp.Args, " "), "-id "+id) {
			_ = syscall.Kill(sp.Pid, syscall.SIGQUIT)
		}
	}
	time.Sleep(2 * time.Second)
	data, _ := os.ReadFile(c.LogPath)
	if before != nil && int64(len(data)) > before.Size() {
		data = data[before.Size():]
	}
	if len(data) > 60000 {
		data = data[:60000]
	}
	return string(data)
}
