package shim

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	contentapi "github.com/containerd/containerd/api/services/content/v1"
	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/content"
	contentproxy "github.com/containerd/containerd/v2/core/content/proxy"
	"github.com/containerd/containerd/v2/core/leases"
	leasesproxy "github.com/containerd/containerd/v2/core/leases/proxy"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	snapshotsproxy "github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/warmshim/warm/store"
)

// snapshotRootfs prepares pooled sandboxes' root filesystems through containerd's
// snapshot service, each under a lease of its own: containerd's garbage collector keeps
// them, and operators see them (`ctr snapshots ls`, `ctr leases ls`, named warm-*).
type snapshotRootfs struct {
	address, ns string

	mu    sync.Mutex
	conn  *cdClient         // guarded by mu
	snaps map[string]string // sandbox id -> snapshotter; guarded by mu

	// keepMu serialises KeepTemplate and ForgetTemplate: a late call for an older
	// generation must not drop a newer generation's lease.
	keepMu sync.Mutex
	kept   map[string]int64 // template name -> newest generation leased; guarded by keepMu
}

// cdClient is containerd's gRPC services the shim uses, through their proxies (the client
// package would add its whole dependency tree to every shim start).
type cdClient struct {
	conn *grpc.ClientConn
}

func (c *cdClient) LeasesService() leases.Manager {
	return leasesproxy.NewLeaseManager(leasesapi.NewLeasesClient(c.conn))
}

func (c *cdClient) SnapshotService(name string) snapshots.Snapshotter {
	return snapshotsproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(c.conn), name)
}

func (c *cdClient) ContentStore() content.Store {
	return contentproxy.NewContentStore(contentapi.NewContentClient(c.conn))
}

func (c *cdClient) Containers() containersapi.ContainersClient {
	return containersapi.NewContainersClient(c.conn)
}

func (c *cdClient) Images() imagesapi.ImagesClient { return imagesapi.NewImagesClient(c.conn) }

const sandboxPrefix = "warm-sandbox-"

func (s *snapshotRootfs) get() (*cdClient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		return s.conn, nil
	}
	// containerd restarts (an upgrade, a crash): the connection is made again within a
	// second of its socket coming back, not after gRPC's default backoff of up to 2 min,
	// during which every call fails at once.
	conn, err := grpc.NewClient("unix://"+s.address, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		}))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", s.address, err)
	}
	c := &cdClient{conn: conn}
	s.conn = c
	if s.snaps == nil {
		s.snaps = map[string]string{}
	}
	return c, nil
}

// Prepare makes an active snapshot of the template's image layers for sandbox id.
func (s *snapshotRootfs) Prepare(ctx context.Context, id string, t *store.Template) ([]mount.Mount, error) {
	if t.Snapshotter == "" || t.SnapshotParent == "" {
		return nil, fmt.Errorf("template %s records no image snapshot to prepare a rootfs from", t.Name)
	}
	c, err := s.get()
	if err != nil {
		return nil, err
	}
	ctx = namespaces.WithNamespace(ctx, s.ns)
	l, err := c.LeasesService().Create(ctx, leases.WithID(sandboxPrefix+id), leases.WithLabels(map[string]string{"io.containerd.warm.template": t.Name}))
	if err != nil && !errdefs.IsAlreadyExists(err) {
		return nil, fmt.Errorf("lease: %w", err)
	}
	if err == nil {
		ctx = leases.WithLease(ctx, l.ID)
	} else {
		ctx = leases.WithLease(ctx, sandboxPrefix+id)
	}
	s.mu.Lock()
	s.snaps[id] = t.Snapshotter
	s.mu.Unlock()
	ms, err := c.SnapshotService(t.Snapshotter).Prepare(ctx, sandboxPrefix+id, t.SnapshotParent,
		snapshots.WithLabels(map[string]string{"io.containerd.warm.template": t.Name}))
	if err != nil {
		return nil, fmt.Errorf("prepare snapshot of %s: %w", t.SnapshotParent, err)
	}
	return ms, nil
}

// Remove deletes the sandbox's snapshot and lease (its writes go with it), waiting up to
// 10 s for containerd should it be unreachable (restarting): they would be left behind.
func (s *snapshotRootfs) Remove(ctx context.Context, id string) error {
	return whileUnavailable(func() error { return s.removeOnce(ctx, id) })
}

// whileUnavailable runs f again while it fails because containerd cannot be reached
// (restarting), for up to 10 s.
func whileUnavailable(f func() error) (err error) {
	for i := 0; i < 100; i++ {
		if err = f(); err == nil || (status.Code(err) != codes.Unavailable && !errdefs.IsUnavailable(err)) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func (s *snapshotRootfs) removeOnce(ctx context.Context, id string) error {
	c, err := s.get()
	if err != nil {
		return err
	}
	ctx = namespaces.WithNamespace(ctx, s.ns)
	s.mu.Lock()
	sn := s.snaps[id]
	s.mu.Unlock()
	if sn == "" {
		sn = "overlayfs" // a sandbox left by an earlier shim: containerd's default
	}
	if err := c.SnapshotService(sn).Remove(ctx, sandboxPrefix+id); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove snapshot: %w", err)
	}
	if err := c.LeasesService().Delete(ctx, leases.Lease{ID: sandboxPrefix + id}, leases.SynchronousDelete); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove lease: %w", err)
	}
	s.mu.Lock()
	delete(s.snaps, id)
	s.mu.Unlock()
	return nil
}

// templateLease names the lease that keeps a template generation's image snapshot.
const templateLease = "warm-template-"

// templateLeaseLabel labels a template's leases with its name.
const templateLeaseLabel = "io.containerd.warm.template-snapshot"

// KeepTemplate holds the image snapshot a template generation's sandboxes are prepared
// from under a lease (warm-template-NAME-gGEN), so that containerd's garbage collector
// keeps it while no sandbox's snapshot does (a drained pool, its application image
// removed or its tag moved), and drops the leases of the template's other generations.
// current says, under the lock ForgetTemplate takes too, whether the generation is
// still the template's (a template deleted meanwhile gets no lease). containerd being
// unreachable (restarting) is waited for up to 10 s.
func (s *snapshotRootfs) KeepTemplate(ctx context.Context, t *store.Template, current func() bool) error {
	if t.Snapshotter == "" || t.SnapshotParent == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s.keepMu.Lock()
	defer s.keepMu.Unlock()
	if s.kept[t.Name] >= t.Generation || !current() {
		return nil // leased already, a newer generation is, or it is gone
	}
	if err := whileUnavailable(func() error { return s.keepOnce(ctx, t) }); err != nil {
		return err
	}
	if s.kept == nil {
		s.kept = map[string]int64{}
	}
	s.kept[t.Name] = t.Generation
	return nil
}

func (s *snapshotRootfs) keepOnce(ctx context.Context, t *store.Template) error {
	c, err := s.get()
	if err != nil {
		return err
	}
	ctx = namespaces.WithNamespace(ctx, s.ns)
	ls := c.LeasesService()
	id := templateLeaseID(t.Name, t.Generation)
	l, err := ls.Create(ctx, leases.WithID(id), leases.WithLabels(map[string]string{templateLeaseLabel: t.Name}))
	switch {
	case errdefs.IsAlreadyExists(err):
		l = leases.Lease{ID: id}
	case err != nil:
		return fmt.Errorf("lease %s: %w", id, err)
	}
	if err := ls.AddResource(ctx, l, leases.Resource{ID: t.SnapshotParent, Type: "snapshots/" + t.Snapshotter}); err != nil {
		return fmt.Errorf("lease %s: snapshot %s: %w", id, t.SnapshotParent, err)
	}
	return s.deleteTemplateLeases(ctx, fmt.Sprintf("labels.%q==%q", templateLeaseLabel, t.Name), func(l leases.Lease) bool { return l.ID == id })
}

func templateLeaseID(name string, gen int64) string {
	return templateLease + name + "-g" + strconv.FormatInt(gen, 10)
}

// SweepTemplateLeases deletes the template leases of the namespace that name no current
// template generation (current: name -> generation; a negative one keeps every lease of
// the name): those of templates deleted while no pool shim ran, or of generations
// replaced meanwhile.
func (s *snapshotRootfs) SweepTemplateLeases(ctx context.Context, current map[string]int64) error {
	s.keepMu.Lock()
	defer s.keepMu.Unlock()
	return s.deleteTemplateLeases(ctx, fmt.Sprintf("labels.%q", templateLeaseLabel), func(l leases.Lease) bool {
		name := l.Labels[templateLeaseLabel]
		gen, ok := current[name]
		return ok && (gen < 0 || l.ID == templateLeaseID(name, gen))
	})
}

// ForgetTemplate deletes the leases KeepTemplate made for template name, but keep (a
// deleted template: all of them).
func (s *snapshotRootfs) ForgetTemplate(ctx context.Context, name, keep string) error {
	s.keepMu.Lock()
	defer s.keepMu.Unlock()
	if keep == "" {
		delete(s.kept, name)
	}
	return s.deleteTemplateLeases(ctx, fmt.Sprintf("labels.%q==%q", templateLeaseLabel, name), func(l leases.Lease) bool { return l.ID == keep })
}

// deleteTemplateLeases deletes the leases filter lists but those keep says to keep.
// Called with keepMu held.
func (s *snapshotRootfs) deleteTemplateLeases(ctx context.Context, filter string, keep func(leases.Lease) bool) error {
	c, err := s.get()
	if err != nil {
		return err
	}
	ctx = namespaces.WithNamespace(ctx, s.ns)
	ls := c.LeasesService()
	all, err := ls.List(ctx, filter)
	if err != nil {
		return err
	}
	for _, l := range all {
		if keep(l) {
			continue
		}
		if err := ls.Delete(ctx, l); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("lease %s: %w", l.ID, err)
		}
	}
	return nil
}

// parentOf returns the snapshotter and parent snapshot (the image layers) of a container,
// waiting up to 10 s for containerd should it be unreachable (restarting): a template made
// without them can never be pooled.
func (s *snapshotRootfs) parentOf(ctx context.Context, id string) (sn, parent string, err error) {
	err = whileUnavailable(func() (err error) {
		sn, parent, err = s.parentOnce(ctx, id)
		return err
	})
	return sn, parent, err
}

func (s *snapshotRootfs) parentOnce(ctx context.Context, id string) (string, string, error) {
	c, err := s.get()
	if err != nil {
		return "", "", err
	}
	ctx = namespaces.WithNamespace(ctx, s.ns)
	resp, err := c.Containers().Get(ctx, &containersapi.GetContainerRequest{ID: id})
	if err != nil {
		return "", "", err
	}
	ci := resp.Container
	if ci.SnapshotKey == "" {
		return "", "", fmt.Errorf("container %s has no snapshot", id)
	}
	info, err := c.SnapshotService(ci.Snapshotter).Stat(ctx, ci.SnapshotKey)
	if err != nil {
		return "", "", err
	}
	return ci.Snapshotter, info.Parent, nil
}
