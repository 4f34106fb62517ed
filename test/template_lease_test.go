package test

import (
	"io"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/warmshim/warm/test/harness"
)

// TestTemplateKeepsItsImageSnapshot: a template holds its image's snapshot under a lease
// of its own (warm-template-NAME-gGEN), so that a drained pool whose application image
// was removed (and garbage-collected) still refills; deleting the template drops the
// lease.
func TestTemplateKeepsItsImageSnapshot(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "lease-" + shortName(t)
	ref := "docker.io/warmtest/" + name + ":1"
	// An image of its own: layers no other image shares, which the collector removes
	// once the image is gone and nothing holds them.
	files, err := harness.BusyboxFiles()
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, harness.File{Path: "etc/unique", Mode: 0o644, Data: []byte(name + time.Now().String())})
	if err := harness.ImportImage(e.ctx, e.client, ref, files, ocispec.ImageConfig{Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}}); err != nil {
		t.Fatal(err)
	}
	img, err := e.client.GetImage(e.ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	diffIDs, err := img.RootFS(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	parent := identity.ChainID(diffIDs).String()
	// The template, made by annotation from a container of that image.
	c, err := e.client.NewContainer(e.ctx, name+"-maker", containerd.WithImage(img),
		containerd.WithNewSnapshot(name+"-maker-snap", img), e.runtimeOpt(),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(echoApp...), oci.WithDefaultUnixDevices, templateAnn(name, true)))
	if err != nil {
		t.Fatal(err)
	}
	r, w := io.Pipe()
	defer w.Close()
	var out syncBuffer
	task, exit := e.start(c, streams(r, &out, io.Discard))
	askSeed(t, w, &out, "maker")
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	waitFor(t, "pool filled", func() bool { st, ok, _ := ctl.Pool(name); return ok && st.Frozen >= 1 })
	leased := func() []string {
		ls, err := e.client.LeasesService().List(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, l := range ls {
			if strings.HasPrefix(l.ID, "warm-template-"+name+"-g") {
				ids = append(ids, l.ID)
			}
		}
		return ids
	}
	waitFor(t, "the template's lease", func() bool { return len(leased()) == 1 })
	// Nothing else holds the image's snapshot: no maker, no sandbox, no image.
	killAndDelete(t, e, c, task, exit)
	if err := ctl.Do("POST", "/pools/"+name+"/drain", nil); err != nil {
		t.Fatal(err)
	}
	if err := e.client.ImageService().Delete(e.ctx, ref, images.SynchronousDelete()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.SnapshotService("overlayfs").Stat(e.ctx, parent); err != nil {
		t.Fatalf("the template's image snapshot was collected: %v", err)
	}
	if err := ctl.Do("POST", "/pools/"+name+"/prewarm?n=1", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "refilled without its image", func() bool { st, _, _ := ctl.Pool(name); return st.Frozen >= 1 })
	if st, _, _ := ctl.Pool(name); st.Failed != 0 {
		t.Fatalf("restores failed: %+v", st)
	}
	// Deleting the template drops its lease (its sandboxes' go with their snapshots).
	if err := ctl.Do("POST", "/pools/"+name+"/drain", nil); err != nil {
		t.Fatal(err)
	}
	if err := ctl.Do("DELETE", "/templates/"+name, nil); err != nil {
		t.Fatal(err)
	}
	if ids := leased(); len(ids) != 0 {
		t.Fatalf("leases of a deleted template: %v", ids)
	}
}
