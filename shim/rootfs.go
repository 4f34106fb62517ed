package shim

import (
	"context"
	"fmt"
	"sync"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/warmshim/warm/store"
)

// snapshotRootfs prepares pooled sandboxes' root filesystems through containerd's
// snapshot service, each under a lease of its own: containerd's garbage collector keeps
// them, and operators see them (`ctr snapshots ls`, `ctr leases ls`, named warm-*).
type snapshotRootfs struct {
	address, ns string

	mu     sync.Mutex
	client *containerd.Client // guarded by mu
	snaps  map[string]string  // sandbox id -> snapshotter; guarded by mu
}

const sandboxPrefix = "warm-sandbox-"

func (s *snapshotRootfs) get() (*containerd.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	c, err := containerd.New(s.address, containerd.WithDefaultNamespace(s.ns))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", s.address, err)
	}
	s.client = c
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

// Remove deletes the sandbox's snapshot and lease (its writes go with it).
func (s *snapshotRootfs) Remove(ctx context.Context, id string) error {
	c, err := s.get()
	if err != nil {
		return err
	}
	ctx = namespaces.WithNamespace(ctx, s.ns)
	s.mu.Lock()
	sn := s.snaps[id]
	delete(s.snaps, id)
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
	return nil
}

// parentOf returns the snapshotter and parent snapshot (the image layers) of a container.
func (s *snapshotRootfs) parentOf(ctx context.Context, id string) (string, string, error) {
	c, err := s.get()
	if err != nil {
		return "", "", err
	}
	ctx = namespaces.WithNamespace(ctx, s.ns)
	ci, err := c.ContainerService().Get(ctx, id)
	if err != nil {
		return "", "", err
	}
	if ci.SnapshotKey == "" {
		return "", "", fmt.Errorf("container %s has no snapshot", id)
	}
	info, err := c.SnapshotService(ci.Snapshotter).Stat(ctx, ci.SnapshotKey)
	if err != nil {
		return "", "", err
	}
	return ci.Snapshotter, info.Parent, nil
}
