package shim

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/oci"
	"github.com/warmshim/warm/pool"
	"github.com/warmshim/warm/store"
)

// fakeSandboxes restores sandboxes that are only handles (no process), after delay,
// telling started (if any) when a restore begins.
type fakeSandboxes struct {
	delay   time.Duration
	started chan struct{}
}

func (f fakeSandboxes) Restore(ctx context.Context, t *store.Template, id string) (any, int64, error) {
	if f.started != nil {
		select {
		case f.started <- struct{}{}:
		default:
		}
	}
	time.Sleep(f.delay)
	return &oci.Sandbox{ID: id, Pid: 1 << 30}, 1, nil
}
func (fakeSandboxes) Destroy(ctx context.Context, h any) error { return nil }
func (fakeSandboxes) Poolable(t *store.Template) error         { return nil }

func planSpec(args ...string) *specs.Spec {
	return &specs.Spec{Process: &specs.Process{Args: args, Cwd: "/"}, Root: &specs.Root{Path: "rootfs"},
		Linux: &specs.Linux{CgroupsPath: "/ns/c"}, Annotations: map[string]string{AnnTemplate: "app"}}
}

func planWarm(p *pool.Pool, cfg config.Config) *warm {
	return &warm{ready: true, ns: "ns", cfg: cfg, self: "/self", runc: "/runc", pools: map[string]*pool.Pool{"app": p},
		frozen: map[int]frozenRef{}, served: map[string]*served{}, importing: map[string]chan struct{}{}}
}

// planDuringReplace runs plan for "c1" (the template is generation 1, running "app" on
// bind:/l) against an empty pool with min 0: the Create waits, the refill it asks for
// starts, and then the template is replaced by generation 2 (args and layers given).
// It returns once plan did.
func planDuringReplace(t *testing.T, args, layers string) (*warm, *pool.Pool, *taskAPI.CreateTaskRequest) {
	t.Helper()
	cfg := config.Default()
	// min 0: nothing is restored until the Create waits (plan gives the pool this
	// configuration again).
	zero := 0
	cfg.Pools = map[string]config.Pool{"app": {Min: &zero, Initial: &zero}}
	pc := cfg.PoolFor("app")
	tm := &store.Template{Meta: store.Meta{Name: "app", Namespace: "ns", Spec: planSpec("app"), Layers: "bind:/l"}, Generation: 1}
	rt := fakeSandboxes{delay: 40 * time.Millisecond, started: make(chan struct{}, 1)}
	p := pool.New("ns", tm, pc, rt, nil)
	t.Cleanup(func() { p.Close(context.Background()) })
	w := planWarm(p, cfg)
	r := &taskAPI.CreateTaskRequest{ID: "c1", Bundle: t.TempDir(), Rootfs: []*types.Mount{{Type: "bind", Source: "/l"}}}
	topts := taskOptions{cfg: cfg, runc: &options.Options{}}
	done := make(chan error, 1)
	go func() {
		done <- w.plan(namespaces.WithNamespace(context.Background(), "ns"), r, planSpec("app"), &topts)
	}()
	<-rt.started // the Create compared with generation 1 and waits
	p.SetTemplate(&store.Template{Meta: store.Meta{Name: "app", Namespace: "ns", Spec: planSpec(args), Layers: layers}, Generation: 2})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return w, p, r
}

// TestPlanChecksTheGenerationItServes: a Create compared with generation 1 waits on an
// empty pool; the template is replaced meanwhile by a generation 2 the request does not
// match. The Create is not served generation 2's sandbox, and that sandbox is destroyed
// (never served again).
func TestPlanChecksTheGenerationItServes(t *testing.T) {
	w, p, r := planDuringReplace(t, "another-app", "bind:/other")
	if w.isHit("c1") {
		w.mu.Lock()
		g := w.served["c1"].sb.Template.Generation
		w.mu.Unlock()
		t.Fatalf("served a sandbox of generation %d, which the request does not match", g)
	}
	if r.Checkpoint != "" {
		t.Fatal("restored from a generation that may be gone")
	}
	if st := p.Stats(); st.InUse != 0 {
		t.Fatalf("the sandbox taken and refused is still in use: %+v", st)
	}
	missed := false
	for reason := range p.Stats().Misses {
		missed = missed || strings.Contains(reason, "template was replaced") && strings.Contains(reason, "image layers differ")
	}
	if !missed {
		t.Fatalf("the miss and its reason were not counted: %+v", p.Stats().Misses)
	}
}

// TestPlanCompatibleNewGenerationServed: a newer generation the request matches as well
// is served.
func TestPlanCompatibleNewGenerationServed(t *testing.T) {
	w, p, _ := planDuringReplace(t, "app", "bind:/l")
	if !w.isHit("c1") {
		t.Fatal("not served")
	}
	w.unplan(context.Background(), "c1")
	if st := p.Stats(); st.InUse != 0 {
		t.Fatalf("unplan left the sandbox in use: %+v", st)
	}
}

// planOnFrozen runs plan for "c1" (bundle given, restoring checkpoint unless "") once the
// template's pool holds a frozen sandbox.
func planOnFrozen(t *testing.T, bundle, checkpoint string) (*warm, *pool.Pool, *taskAPI.CreateTaskRequest, error) {
	t.Helper()
	return planOnFrozenWith(t, bundle, checkpoint, &options.Options{}, "", "")
}

// planOnFrozenWith is planOnFrozen with the request's runc options, and the pool's
// sandboxes in runc root sandboxRoot run by the runc binary real (the defaults if "").
func planOnFrozenWith(t *testing.T, bundle, checkpoint string, ropts *options.Options, sandboxRoot, real string) (*warm, *pool.Pool, *taskAPI.CreateTaskRequest, error) {
	t.Helper()
	cfg := config.Default()
	// A generation on disk (its images' inventory) for a restore on create to read.
	gen := t.TempDir()
	if err := os.WriteFile(filepath.Join(gen, "inventory.img"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tm := &store.Template{Meta: store.Meta{Name: "app", Namespace: "ns", Spec: planSpec("app"), Layers: "bind:/l"}, Generation: 1, Dir: gen, Images: gen}
	p := pool.New("ns", tm, cfg.PoolFor("app"), fakeSandboxes{}, nil)
	t.Cleanup(func() { p.Close(context.Background()) })
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Frozen == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	w := planWarm(p, cfg)
	st, err := store.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w.store = st
	if sandboxRoot != "" {
		w.sandboxes = &oci.Sandboxes{Root: sandboxRoot}
	}
	if real != "" {
		w.runc = real
	}
	r := &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle, Rootfs: []*types.Mount{{Type: "bind", Source: "/l"}}, Checkpoint: checkpoint}
	topts := taskOptions{cfg: cfg, runc: ropts}
	return w, p, r, w.plan(namespaces.WithNamespace(context.Background(), "ns"), r, planSpec("app"), &topts)
}

// TestPlanLeavesAnOwnCheckpointAlone: a Create that restores a checkpoint of its own
// (containerd's restore) is neither served from the pool nor given the template's
// checkpoint, however well it matches; the miss is counted with its reason.
func TestPlanLeavesAnOwnCheckpointAlone(t *testing.T) {
	w, p, r, err := planOnFrozen(t, t.TempDir(), "/var/lib/checkpoints/c1")
	if err != nil {
		t.Fatal(err)
	}
	if w.isHit("c1") {
		t.Fatal("a Create restoring its own checkpoint was served a sandbox of the template")
	}
	if r.Checkpoint != "/var/lib/checkpoints/c1" || r.Rootfs == nil {
		t.Fatalf("the request was changed: checkpoint %q, rootfs %v", r.Checkpoint, r.Rootfs)
	}
	if st := p.Stats(); st.InUse != 0 || st.Misses["the Create restores a checkpoint of its own"] != 1 {
		t.Fatalf("want no sandbox in use and the miss counted: %+v", st)
	}
}

// TestPlanErrorAfterAcquireReleases: plan fails after it took a sandbox (the bundle
// cannot be written): the sandbox is released, not left in use for ever.
func TestPlanErrorAfterAcquireReleases(t *testing.T) {
	w, p, _, err := planOnFrozen(t, "/nonexistent/bundle", "")
	if err == nil {
		t.Fatal("plan succeeded")
	}
	if st := p.Stats(); st.InUse != 0 || w.isHit("c1") {
		t.Fatalf("sandbox left acquired: in use %d, served %v", st.InUse, w.isHit("c1"))
	}
}

// TestReleaseWaitsForOp: a release (a failed Create's unplan) waits for the runc command
// handleOp is carrying out on the sandbox, and marks the entry gone so that no adoption
// starts after it.
func TestReleaseWaitsForOp(t *testing.T) {
	w, p, _, err := planOnFrozen(t, t.TempDir(), "")
	if err != nil || !w.isHit("c1") {
		t.Fatalf("not a hit: %v", err)
	}
	w.mu.Lock()
	s := w.served["c1"]
	w.mu.Unlock()
	s.opMu.Lock() // an adoption in progress
	released := make(chan struct{})
	go func() {
		w.unplan(context.Background(), "c1")
		close(released)
	}()
	select {
	case <-released:
		t.Fatal("unplan released the sandbox while an adoption was running")
	case <-time.After(50 * time.Millisecond):
	}
	if st := p.Stats(); st.InUse != 1 {
		t.Fatalf("in use %d during the adoption", st.InUse)
	}
	s.opMu.Unlock()
	<-released
	s.opMu.Lock()
	gone := s.gone
	s.opMu.Unlock()
	if !gone || p.Stats().InUse != 0 {
		t.Fatalf("after unplan: gone %v, in use %d", gone, p.Stats().InUse)
	}
}

// TestPeerUID: the adoption socket knows who connects (root in the tests that run as
// root, as the shim does; it refuses anyone else).
func TestPeerUID(t *testing.T) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := net.Dial("unix", l.Addr().String())
		if err == nil {
			defer c.Close()
			_, _ = c.Read(make([]byte, 1))
		}
	}()
	c, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if uid, err := peerUID(c); err != nil || uid != os.Getuid() {
		t.Fatalf("peer uid %d %v, want %d", uid, err, os.Getuid())
	}
}

// TestPlanRuntimeOptions: a request whose runc options name another runc binary or root
// than the pool's is not served from the pool (the container's later runc commands would
// not find the sandbox); another binary starts cold, another root is restored on create
// into that root. The pool's own, named as configured, by path or by a link, is served.
func TestPlanRuntimeOptions(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "runc")
	if err := os.WriteFile(real, []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "runc-link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	// The pool's runc root, also reached through a link (as /var/run is /run).
	runcRoot := filepath.Join(dir, "run", "warm-runc")
	if err := os.MkdirAll(filepath.Join(runcRoot, "ns"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "run"), filepath.Join(dir, "var-run")); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "crun")
	if err := os.WriteFile(other, []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		binary, root  string
		hit, restored bool
		reason        string
	}{
		{"the pool's runc and root", real, runcRoot, true, false, ""},
		{"the pool's runc by a link", link, runcRoot, true, false, ""},
		{"the pool's root by a link", real, filepath.Join(dir, "var-run", "warm-runc"), true, false, ""},
		{"another runc binary", other, runcRoot, false, false, "binary_name"},
		{"another runc root", real, "/run/other-root", false, true, "root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ropts := &options.Options{BinaryName: tc.binary, Root: tc.root}
			w, p, r, err := planOnFrozenWith(t, t.TempDir(), "", ropts, filepath.Join(runcRoot, "ns"), real)
			if err != nil {
				t.Fatal(err)
			}
			if hit := w.isHit("c1"); hit != tc.hit {
				t.Fatalf("hit %v, want %v", hit, tc.hit)
			}
			if restored := r.Checkpoint != ""; restored != tc.restored {
				t.Fatalf("restore on create %v, want %v", restored, tc.restored)
			}
			if tc.reason != "" {
				found := false
				for reason := range p.Stats().Misses {
					found = found || strings.Contains(reason, tc.reason)
				}
				if !found {
					t.Fatalf("miss not counted with a reason naming %s: %+v", tc.reason, p.Stats().Misses)
				}
			}
			w.unplan(context.Background(), "c1")
		})
	}
}
