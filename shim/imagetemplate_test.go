package shim

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/archive"
	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/pool"
	"github.com/warmshim/warm/store"
)

// TestCheckpointEntries: a checkpoint image's layer unpacks only regular files and
// directories, without their extended attributes, and no more bytes than the layer
// weighs; links, devices, sparse files and whiteouts fail the import.
func TestCheckpointEntries(t *testing.T) {
	layer := func(hdrs ...*tar.Header) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range hdrs {
			if h.Format == 0 {
				h.Format = tar.FormatPAX
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				if _, err := tw.Write(bytes.Repeat([]byte{'x'}, int(h.Size))); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	apply := func(data []byte, size int64) (string, error) {
		dir := t.TempDir()
		_, err := archive.Apply(context.Background(), dir, bytes.NewReader(data), archive.WithFilter(checkpointEntries(size)), archive.WithNoSameOwner())
		return dir, err
	}
	good := layer(
		&tar.Header{Name: "pages-1.img", Typeflag: tar.TypeReg, Mode: 0o644, Size: 100, Uid: 1234,
			PAXRecords: map[string]string{"SCHILY.xattr.user.warm": "x"}},
		&tar.Header{Name: "sub/", Typeflag: tar.TypeDir, Mode: 0o755},
	)
	dir, err := apply(good, int64(len(good)))
	if err != nil {
		t.Fatalf("a plain checkpoint layer: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "pages-1.img")); err != nil || fi.Size() != 100 {
		t.Fatalf("file not unpacked: %v", err)
	}
	buf := make([]byte, 16)
	if n, err := unixGetxattr(filepath.Join(dir, "pages-1.img"), "user.warm", buf); err == nil && n > 0 {
		t.Fatal("an extended attribute from the image was applied")
	}
	for _, tc := range []struct {
		name string
		data []byte
		size int64
		want string
	}{
		{"symlink", layer(&tar.Header{Name: "inventory.img", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}), 1 << 20, "not a file or directory"},
		{"hard link", layer(&tar.Header{Name: "a", Typeflag: tar.TypeLink, Linkname: "b"}), 1 << 20, "not a file or directory"},
		{"device", layer(&tar.Header{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}), 1 << 20, "not a file or directory"},
		{"fifo", layer(&tar.Header{Name: "fifo", Typeflag: tar.TypeFifo}), 1 << 20, "not a file or directory"},
		// 10 KiB that unpack to 1 GiB (GNU tar --sparse, in its own and in the PAX format).
		{"sparse, GNU", testdata(t, "sparse-gnu.tar"), 1 << 20, "not a file or directory"},
		{"sparse, PAX", testdata(t, "sparse-pax.tar"), 1 << 20, "sparse"},
		{"whiteout", layer(&tar.Header{Name: "sub/.wh.x", Typeflag: tar.TypeReg}), 1 << 20, "whiteout"},
		{"larger than its layer", good, 50, "add up to more"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := apply(tc.data, tc.size); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func unixGetxattr(path, name string, buf []byte) (int, error) {
	return unix.Getxattr(path, name, buf)
}

func testdata(t *testing.T, name string) []byte {
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestImportLoopFollowsTheConfiguration: a configuration that names another image while
// an import runs gets that image imported next (it was skipped, and the old one served);
// a failed import is retried; the loop ends once the template comes from the image the
// configuration names, or when the configuration names none.
func TestImportLoopFollowsTheConfiguration(t *testing.T) {
	defer func(r, m time.Duration) { importRetry, importRetryMax = r, m }(importRetry, importRetryMax)
	importRetry, importRetryMax = time.Millisecond, 2*time.Millisecond
	w := imageWarm(true, "reg/ckpt:a")
	var mu sync.Mutex
	var calls []string
	release, started := make(chan struct{}), make(chan struct{})
	w.importFn = func(ctx context.Context, st *store.Store, ns, name, ref string) (*store.Template, error) {
		mu.Lock()
		calls = append(calls, ref)
		n := len(calls)
		mu.Unlock()
		switch n {
		case 1:
			close(started)
			<-release // the configuration changes meanwhile
			return nil, nil
		case 2:
			return nil, errors.New("not unpacked yet")
		}
		return nil, nil
	}
	w.syncImageTemplates(context.Background())
	<-started
	// A second sync during the import: the configuration now names b.
	w.mu.Lock()
	w.cfg = configNaming("reg/ckpt:b")
	w.mu.Unlock()
	w.syncImageTemplates(context.Background())
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for w.importsInFlight() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if w.importsInFlight() {
		t.Fatal("the import loop did not end")
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"reg/ckpt:a", "reg/ckpt:b", "reg/ckpt:b"}; strings.Join(calls, " ") != strings.Join(want, " ") {
		t.Fatalf("imports %v, want %v (a, then the configured b, retried after its failure)", calls, want)
	}
}

// TestImportLoopEndsWithItsPool: an import retrying an image the configuration no longer
// names (its pool removed) stops, and a template it still made is given no pool.
func TestImportLoopEndsWithItsPool(t *testing.T) {
	defer func(r, m time.Duration) { importRetry, importRetryMax = r, m }(importRetry, importRetryMax)
	importRetry, importRetryMax = time.Millisecond, 2*time.Millisecond
	w := imageWarm(true, "reg/ckpt:a")
	tries := make(chan struct{}, 100)
	w.importFn = func(context.Context, *store.Store, string, string, string) (*store.Template, error) {
		tries <- struct{}{}
		return nil, errors.New("not pulled yet")
	}
	w.syncImageTemplates(context.Background())
	<-tries
	<-tries // retrying
	w.mu.Lock()
	w.cfg = config.Default() // the pool is gone from the configuration
	w.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for w.importsInFlight() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if w.importsInFlight() {
		t.Fatal("the import loop goes on for a pool no longer configured")
	}
}

// TestOnlyThePoolShimImports: a pod's or group's shim imports no checkpoint image (it
// holds no pool; one made there would restore sandboxes it has no place for).
func TestOnlyThePoolShimImports(t *testing.T) {
	w := imageWarm(false, "reg/ckpt:a")
	w.importFn = func(context.Context, *store.Store, string, string, string) (*store.Template, error) {
		t.Error("a pod's shim imported a checkpoint image")
		return nil, nil
	}
	w.syncImageTemplates(context.Background())
	if w.importsInFlight() {
		t.Fatal("an import in flight in a pod's shim")
	}
	if p := w.poolLocked(&store.Template{Meta: store.Meta{Name: "app"}}); p != nil || len(w.pools) != 0 {
		t.Fatal("a pod's shim made a pool")
	}
}

// TestResyncImages: the pool shim looks at its checkpoint images again on its own (a tag
// pulled again is imported without a configuration change or a restart).
func TestResyncImages(t *testing.T) {
	w := imageWarm(true, "reg/ckpt:a")
	looked := make(chan string, 16)
	w.importFn = func(_ context.Context, _ *store.Store, _, _, ref string) (*store.Template, error) {
		select {
		case looked <- ref:
		default:
		}
		return nil, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { w.resyncImages(ctx, time.Millisecond); close(stopped) }()
	defer func() {
		cancel()
		<-stopped
		for w.importsInFlight() {
			time.Sleep(time.Millisecond)
		}
	}()
	for i := 0; i < 3; i++ {
		select {
		case ref := <-looked:
			if ref != "reg/ckpt:a" {
				t.Fatalf("looked at %s", ref)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d looks at the image, want 3", i)
		}
	}
}

// configNaming is the default configuration with pool "app" naming checkpoint image ref.
func configNaming(ref string) config.Config {
	cfg := config.Default()
	cfg.Pools = map[string]config.Pool{"app": {Image: ref}}
	return cfg
}

// imageWarm is a namespace's warm (its pool shim's, or a pod's shim's) whose
// configuration names checkpoint image ref for pool "app".
func imageWarm(poolShim bool, ref string) *warm {
	return &warm{poolShim: poolShim, ns: "ns", cfg: configNaming(ref), importing: map[string]chan struct{}{}, pools: map[string]*pool.Pool{}}
}
