package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/platforms"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/warmshim/warm/oci"
	"github.com/warmshim/warm/store"
)

// syncImageTemplates makes a template of every [pools.NAME] that names a checkpoint
// image (what `ctr c checkpoint --task` makes) and has none from that image yet. It runs
// in the background: a Create that names such a template meanwhile starts cold.
func (w *warm) syncImageTemplates(ctx context.Context) {
	w.mu.Lock()
	cfg, st, ns := w.cfg, w.store, w.ns
	w.mu.Unlock()
	for name := range cfg.Pools {
		ref := cfg.PoolFor(name).Image
		if ref == "" {
			continue
		}
		w.mu.Lock()
		busy := w.importing[name]
		w.importing[name] = true
		w.mu.Unlock()
		if busy {
			continue
		}
		go func(name, ref string) {
			defer func() {
				w.mu.Lock()
				delete(w.importing, name)
				w.mu.Unlock()
			}()
			l := log.G(ctx).WithField("template", name).WithField("image", ref)
			t, err := w.importImage(namespaces.WithNamespace(context.WithoutCancel(ctx), ns), st, ns, name, ref)
			if err != nil {
				l.WithError(err).Error("template from checkpoint image")
				return
			}
			if t == nil {
				return // already current
			}
			l.WithField("generation", t.Generation).Info("template registered from checkpoint image")
			w.mu.Lock()
			w.poolLocked(t)
			w.mu.Unlock()
		}(name, ref)
	}
}

// importImage reads a containerd checkpoint image through containerd's content store
// and commits it as a template (nil if the current one already comes from it).
func (w *warm) importImage(ctx context.Context, st *store.Store, ns, name, ref string) (*store.Template, error) {
	c, err := w.rootfs.get()
	if err != nil {
		return nil, err
	}
	// A lease keeps what is read (and the layer view) from the garbage collector.
	ls := c.LeasesService()
	l, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(10*time.Minute))
	if err != nil {
		return nil, err
	}
	defer ls.Delete(context.WithoutCancel(ctx), l)
	ctx = leases.WithLease(ctx, l.ID)

	img, err := imageTarget(ctx, c, ref)
	if err != nil {
		return nil, fmt.Errorf("checkpoint image %s: %w", ref, err)
	}
	source := "image:" + ref + "@" + img.Digest.String()
	if cur, err := st.Get(ns, name); err == nil && cur.Source == source {
		return nil, nil
	}
	cs := c.ContentStore()
	data, err := content.ReadBlob(ctx, cs, img)
	if err != nil {
		return nil, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("checkpoint image %s: not an index: %w", ref, err)
	}
	var ckpt, cfgDesc *ocispec.Descriptor
	for i := range idx.Manifests {
		switch idx.Manifests[i].MediaType {
		case images.MediaTypeContainerd1Checkpoint:
			ckpt = &idx.Manifests[i]
		case images.MediaTypeContainerd1CheckpointConfig:
			cfgDesc = &idx.Manifests[i]
		}
	}
	// ctr c checkpoint names the application's image in the index's ref.name (the
	// task API's checkpoint in image.name).
	appImage := idx.Annotations[ocispec.AnnotationRefName]
	if appImage == "" {
		appImage = idx.Annotations["image.name"]
	}
	if ckpt == nil || cfgDesc == nil || appImage == "" {
		return nil, fmt.Errorf("checkpoint image %s: needs a CRIU checkpoint, its config and the name of the application image (make it with `ctr c checkpoint --task`)", ref)
	}
	spec, err := readCheckpointSpec(ctx, cs, *cfgDesc)
	if err != nil {
		return nil, err
	}
	// The application's image gives the layers a sandbox's rootfs is prepared from.
	app, err := imageTarget(ctx, c, appImage)
	if err != nil {
		return nil, fmt.Errorf("image %s of checkpoint %s: %w", appImage, ref, err)
	}
	cfgD, err := images.Config(ctx, cs, app, platforms.Default())
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", appImage, err)
	}
	diffIDs, err := images.RootFS(ctx, cs, cfgD)
	if err != nil {
		return nil, err
	}
	const snapshotter = "overlayfs"
	parent := identity.ChainID(diffIDs).String()
	if _, err := c.SnapshotService(snapshotter).Stat(ctx, parent); err != nil {
		return nil, fmt.Errorf("image %s is not unpacked for %s (run `ctr image unpack %s` or start a container of it once): %w", appImage, snapshotter, appImage, err)
	}
	layers, err := w.layersOfParent(ctx, snapshotter, parent)
	if err != nil {
		return nil, err
	}
	meta := store.Meta{Name: name, Namespace: ns, Created: time.Now().UTC(), Source: source, Spec: spec,
		Layers: layers, Snapshotter: snapshotter, SnapshotParent: parent}
	return st.Commit(meta, func(images string) error {
		ra, err := cs.ReaderAt(ctx, *ckpt)
		if err != nil {
			return err
		}
		defer ra.Close()
		_, err = archive.Apply(ctx, images, content.NewReader(ra))
		return err
	})
}

// imageTarget is the target descriptor of an image in containerd's image store.
func imageTarget(ctx context.Context, c *cdClient, ref string) (ocispec.Descriptor, error) {
	resp, err := c.Images().Get(ctx, &imagesapi.GetImageRequest{Name: ref})
	if err != nil {
		return ocispec.Descriptor{}, errgrpc.ToNative(err)
	}
	t := resp.Image.Target
	return ocispec.Descriptor{MediaType: t.MediaType, Digest: digest.Digest(t.Digest), Size: t.Size, Annotations: t.Annotations}, nil
}

func readCheckpointSpec(ctx context.Context, cs content.Store, d ocispec.Descriptor) (*specs.Spec, error) {
	data, err := content.ReadBlob(ctx, cs, d)
	if err != nil {
		return nil, err
	}
	var a anypb.Any
	if err := proto.Unmarshal(data, &a); err != nil {
		return nil, fmt.Errorf("checkpoint config: %w", err)
	}
	v, err := typeurl.UnmarshalAny(&a)
	if err != nil {
		return nil, fmt.Errorf("checkpoint config: %w", err)
	}
	sp, ok := v.(*specs.Spec)
	if !ok {
		return nil, fmt.Errorf("checkpoint config holds %T, not an OCI spec", v)
	}
	return sp, nil
}

// layersOfParent is what oci.LayersOf reads from a container's rootfs on these layers:
// a read-only view shows it (overlay lowerdir, or the single layer's directory).
func (w *warm) layersOfParent(ctx context.Context, snapshotter, parent string) (string, error) {
	c, err := w.rootfs.get()
	if err != nil {
		return "", err
	}
	sn := c.SnapshotService(snapshotter)
	key := "warm-layers-" + strings.ReplaceAll(parent, ":", "-")
	ms, err := sn.View(ctx, key, parent)
	if err != nil {
		return "", fmt.Errorf("view %s: %w", parent, err)
	}
	defer sn.Remove(context.WithoutCancel(ctx), key)
	var infos []oci.MountInfo
	for _, m := range ms {
		infos = append(infos, oci.MountInfo{Type: m.Type, Source: m.Source, Options: m.Options})
	}
	if len(infos) == 1 && infos[0].Type == "bind" {
		return infos[0].Source, nil
	}
	return oci.LayersOf(infos), nil
}

// importsInFlight reports whether checkpoint images are being imported.
func (w *warm) importsInFlight() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.importing) > 0
}
