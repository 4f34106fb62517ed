package shim

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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
// in the background: a Create that names such a template meanwhile starts cold. Only the
// pool shim imports (a pod's or group's shim holds no pool). Every import in flight is
// woken (one waiting to retry tries at once with the configuration's image of now, or
// ends if its pool is no longer configured).
func (w *warm) syncImageTemplates(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.poolShim || w.stopping {
		return
	}
	for _, kick := range w.importing {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	for name := range w.cfg.Pools {
		if _, busy := w.importing[name]; busy || w.cfg.PoolFor(name).Image == "" {
			continue
		}
		kick := make(chan struct{}, 1)
		w.importing[name] = kick
		go w.importLoop(namespaces.WithNamespace(context.WithoutCancel(ctx), w.ns), w.ns, name, kick)
	}
}

// imageResync is how often the pool shim looks again at the checkpoint images its
// configuration names: a tag pulled again with another digest makes a new generation.
const imageResync = 5 * time.Minute

// resyncImages syncs the configured checkpoint images every interval until ctx ends (the
// pool shim gives it one that does not).
func (w *warm) resyncImages(ctx context.Context, interval time.Duration) {
	every(ctx, interval, w.syncImageTemplates)
}

// Import retries: a checkpoint image not pulled or unpacked yet is tried again, from
// importRetry up to importRetryMax apart, or at once when a sync wakes the loop.
var (
	importRetry    = 30 * time.Second
	importRetryMax = 10 * time.Minute
)

// importLoop imports the checkpoint image the configuration names for template name
// (read again on every pass) until the template comes from it: it imports again when the
// configuration changed during an import, retries a failed one, and ends when the
// configuration names no image for the pool any more, or the pool shim is shut down. It
// owns importing[name] (whose channel kick wakes it) until it returns; an import holds
// the pool shim up (holdsPools), so on its end the shim may exit (onIdle).
func (w *warm) importLoop(ctx context.Context, ns, name string, kick chan struct{}) {
	defer func() {
		if w.onIdle != nil {
			w.onIdle()
		}
	}()
	backoff := importRetry
	// configured is the image the configuration names now ("" for none, or when the
	// pool shim is shutting down); called with mu.
	configured := func() string {
		if _, ok := w.cfg.Pools[name]; !ok || w.stopping {
			return ""
		}
		return w.cfg.PoolFor(name).Image
	}
	for {
		w.mu.Lock()
		ref, st := configured(), w.store
		if ref == "" {
			delete(w.importing, name)
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		l := log.G(ctx).WithField("template", name).WithField("image", ref)
		imp := w.importImage
		if w.importFn != nil {
			imp = w.importFn
		}
		t, err := imp(ctx, st, ns, name, ref)
		switch {
		case err != nil:
			l.WithError(err).Error("template from checkpoint image")
		case t != nil:
			l.WithField("generation", t.Generation).Info("template registered from checkpoint image")
		}
		w.mu.Lock()
		cur := configured()
		if t != nil && cur == ref {
			w.poolLocked(t)
		}
		if cur != "" && cur != ref {
			w.mu.Unlock()
			l.WithField("now", cur).Info("the configuration names another checkpoint image: importing it")
			backoff = importRetry
			continue
		}
		if err == nil || cur == "" {
			delete(w.importing, name)
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		l.WithField("retry_in", backoff).Info("template from checkpoint image: retrying")
		select {
		case <-time.After(backoff):
			backoff = min(2*backoff, importRetryMax)
		case <-kick:
			backoff = importRetry
		}
	}
}

// importTimeout bounds one import (the lease that keeps its content lives as long).
const importTimeout = 10 * time.Minute

// importImage reads a containerd checkpoint image through containerd's content store
// and commits it as a template (nil if the current one already comes from it).
func (w *warm) importImage(ctx context.Context, st *store.Store, ns, name, ref string) (_ *store.Template, retErr error) {
	ctx, cancel := context.WithTimeout(ctx, importTimeout)
	defer cancel()
	defer func() {
		// Every error names the configuration key and the image it comes from.
		if retErr != nil {
			retErr = fmt.Errorf("pools.%s.image: checkpoint image %s: %w", name, ref, retErr)
		}
	}()
	c, err := w.rootfs.get()
	if err != nil {
		return nil, err
	}
	// A lease keeps what is read (and the layer view) from the garbage collector.
	ls := c.LeasesService()
	l, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(importTimeout))
	if err != nil {
		return nil, err
	}
	defer ls.Delete(context.WithoutCancel(ctx), l)
	ctx = leases.WithLease(ctx, l.ID)

	img, err := imageTarget(ctx, c, ref)
	if err != nil {
		return nil, fmt.Errorf("%w (give the name containerd lists in `ctr -n %s images ls`, e.g. docker.io/library/NAME:TAG, after pulling it)", err, ns)
	}
	// The checkpoint image's digest covers the application image it pins (--image). An
	// application image named only (no --image) is read by its name at import, and a
	// move of that name alone makes no new template: the checkpoint's memory is of the
	// old image's files, and requests on the new one differ in their layers (cold).
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
		return nil, fmt.Errorf("not an index: %w (make it with `ctr c checkpoint --task`)", err)
	}
	var ckpt, cfgDesc, pinned *ocispec.Descriptor
	for i := range idx.Manifests {
		switch d := &idx.Manifests[i]; d.MediaType {
		case images.MediaTypeContainerd1Checkpoint:
			ckpt = d
		case images.MediaTypeContainerd1CheckpointConfig:
			cfgDesc = d
		case images.MediaTypeContainerd1RW:
			// The container's writes: a sandbox's rootfs is the image's layers alone.
			log.G(ctx).WithField("template", name).Warn("checkpoint image " + ref + " carries the container's writes (--rw): they are not applied; a file the application keeps open among them fails the restore")
		case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, images.MediaTypeDockerSchema2Manifest, images.MediaTypeDockerSchema2ManifestList:
			pinned = d // `ctr c checkpoint --image`: the application image itself
		}
	}
	// ctr c checkpoint names the application's image in the index's ref.name (the
	// task API's checkpoint in image.name).
	appImage := idx.Annotations[ocispec.AnnotationRefName]
	if appImage == "" {
		appImage = idx.Annotations["image.name"]
	}
	if ckpt == nil || cfgDesc == nil || appImage == "" {
		return nil, errors.New("needs a CRIU checkpoint, its config and the name of the application image (make it with `ctr c checkpoint --task`)")
	}
	spec, err := readCheckpointSpec(ctx, cs, *cfgDesc)
	if err != nil {
		return nil, err
	}
	// The application's image gives the layers a sandbox's rootfs is prepared from: the
	// one the checkpoint pins (--image), else the image its name has now.
	var app ocispec.Descriptor
	if pinned != nil {
		app = *pinned
	} else {
		if app, err = imageTarget(ctx, c, appImage); err != nil {
			return nil, fmt.Errorf("application image %s: %w", appImage, err)
		}
		log.G(ctx).WithField("template", name).Info("checkpoint image " + ref + " names its application image " + appImage + " without pinning it: the image that name has now is used (`ctr c checkpoint --task --image` pins it)")
	}
	cfgD, err := images.Config(ctx, cs, app, platforms.Default())
	if err != nil {
		return nil, fmt.Errorf("application image %s: %w", appImage, err)
	}
	diffIDs, err := images.RootFS(ctx, cs, cfgD)
	if err != nil {
		return nil, fmt.Errorf("application image %s: %w", appImage, err)
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
	w.mu.Lock()
	lock := w.cfg.CriuNetworkLock
	w.mu.Unlock()
	return st.Commit(meta, func(images string) error {
		ra, err := cs.ReaderAt(ctx, *ckpt)
		if err != nil {
			return err
		}
		defer ra.Close()
		if _, err = archive.Apply(ctx, images, content.NewReader(ra), archive.WithFilter(checkpointEntries(ckpt.Size)), archive.WithNoSameOwner()); err != nil {
			return err
		}
		// CRIU restores the images with the network lock they record: containerd's
		// checkpoint recorded CRIU's default, which each refill and restore on create
		// would pay for (docs/pool.md, Templates).
		changed, err := store.SetNetworkLock(images, lock)
		if changed {
			log.G(ctx).WithField("template", name).WithField("criu_network_lock", lock).Info("checkpoint image: CRIU's network lock set for its restores")
		}
		return err
	})
}

// checkpointEntries admits what a CRIU image set in a tar holds (an uncompressed layer,
// whose files add up to no more than its size): regular files and directories, without
// their extended attributes. Anything else (links, devices, sparse files that unpack to
// far more than they weigh, whiteouts) or more bytes than size fails the import.
func checkpointEntries(size int64) archive.Filter {
	var total int64
	return func(hdr *tar.Header) (bool, error) {
		switch {
		case hdr.Typeflag == tar.TypeXGlobalHeader:
			return false, nil // PAX defaults for the entries after it, not a file
		case hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeDir:
			return false, fmt.Errorf("checkpoint entry %s is of tar type %q, not a file or directory: refused", hdr.Name, hdr.Typeflag)
		case strings.Contains(hdr.Name, ".wh."):
			return false, fmt.Errorf("checkpoint entry %s is a whiteout: refused", hdr.Name)
		}
		for k := range hdr.PAXRecords {
			if strings.HasPrefix(k, "GNU.sparse.") {
				return false, fmt.Errorf("checkpoint entry %s is a sparse file: refused", hdr.Name)
			}
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				delete(hdr.PAXRecords, k) // what Apply sets extended attributes from
			}
		}
		total += hdr.Size
		if total > size {
			return false, fmt.Errorf("checkpoint files add up to more than the %d bytes of its layer: refused", size)
		}
		return true, nil
	}
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
	// Unique: two pools' imports may view the same layers at once.
	key := "warm-layers-" + strings.ReplaceAll(parent, ":", "-") + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
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
