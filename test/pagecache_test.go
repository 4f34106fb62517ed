package test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/internal/pagecache"
	"github.com/warmshim/warm/test/harness"
)

// bigBlobApp is echoApp holding about 32 MiB of random data: an image that CRIU's
// sequential read would cache in large folios (a small one it caches in small ones).
var bigBlobApp = []string{"sh", "-c", "blob=$(head -c 24000000 /dev/urandom | base64); " + echoApp[2]}

// TestPoolTemplateImageSinglePages: before each refill's restore the pool shim has its
// template's memory image cached in single pages (internal/pagecache), so that CRIU's
// copy of it can be preempted. Its pages evicted, as memory pressure would, are read back
// that way by the next refill, not by CRIU's readahead in large folios.
func TestPoolTemplateImageSinglePages(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "pages-" + shortName(t)
	makeTemplate(t, e, name, withArgs(bigBlobApp))
	imgs, err := filepath.Glob(filepath.Join(cd.WarmState, "templates", cd.Namespace, name, "g*", "images", "pages-*.img"))
	if err != nil {
		t.Fatal(err)
	}
	var img string
	for _, p := range imgs {
		if fi, err := os.Stat(p); err == nil && fi.Size() >= pagecache.MinSize {
			img = p
		}
	}
	if img == "" {
		t.Fatalf("no pages image of %d bytes or more among %v", pagecache.MinSize, imgs)
	}
	// (A page evicted after the restore is read back in a folio of its own to be counted.)
	checkSinglePages := func(when string) {
		t.Helper()
		large, err := pagecache.LargeFolioPages(img)
		if err != nil {
			t.Fatalf("%s: folio sizes: %v", when, err)
		}
		if large != 0 {
			t.Fatalf("%s: %d pages of %s cached in large folios", when, large, img)
		}
	}
	checkSinglePages("after the pool filled")

	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if all, _ := pagecache.Resident(img); all {
		t.Fatal("the image's pages were not evicted")
	}
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	st, _, err := ctl.Pool(name)
	if err != nil {
		t.Fatal(err)
	}
	restored := st.Restored
	if err := ctl.Do("POST", "/pools/"+name+"/prewarm?n="+strconv.Itoa(st.Frozen+1), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one more sandbox restored", func() bool {
		st, _, _ := ctl.Pool(name)
		return st.Restored > restored && st.Restoring == 0
	})
	checkSinglePages("after a refill of the evicted image")
}
