package pagecache

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// writeImage writes size bytes of random data in 1 MB writes (as a dump does: the page
// cache may hold them in large folios) and syncs them.
func writeImage(t *testing.T, path string, size int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for n := 0; n < size; n += len(buf) {
		if _, err := rand.Read(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// fewMissing fails unless path is in the page cache but for at most a few pages: the
// 2-core VM this was written on evicts a few cached pages now and then (runs of 7 to
// 68, cause unknown: no reclaim ran), so a file just read may already miss some.
func fewMissing(t *testing.T, when, path string) {
	t.Helper()
	missing, err := Missing(path)
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	var n int64
	for _, sp := range missing {
		n += sp.Len
	}
	if n > 1<<20 {
		t.Fatalf("%s: %d bytes of %s not cached (%d runs)", when, n, path, len(missing))
	}
}

// evict drops path's clean cached pages.
func evict(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// readSequentially reads path with the default readahead (which caches large folios
// where the file system has them).
func readSequentially(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil || len(data) == 0 {
		t.Fatal(err)
	}
}

func TestPrimeCachesSinglePages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pages-1.img")
	writeImage(t, path, 16<<20)
	evict(t, path)
	readSequentially(t, path)
	before, err := LargeFolioPages(path)
	ok := err == nil
	if err := Prime(path); err != nil {
		t.Fatal(err)
	}
	fewMissing(t, "after Prime", path)
	if !ok {
		t.Logf("folio sizes not checked: %v", err)
		return
	}
	after, _ := LargeFolioPages(path)
	t.Logf("pages in large folios: %d after a sequential read, %d after Prime", before, after)
	if after != 0 {
		t.Fatalf("%d pages still in large folios after Prime", after)
	}
	if before == 0 {
		t.Log("this file system cached the sequential read in single pages too")
	}
}

func TestResident(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pages-1.img")
	writeImage(t, path, 8<<20)
	evict(t, path)
	if all, err := Resident(path); err != nil || all {
		t.Fatalf("after eviction: resident %v, %v", all, err)
	}
	readSequentially(t, path)
	fewMissing(t, "after a read", path)
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if all, err := Resident(empty); err != nil || !all {
		t.Fatalf("empty file: resident %v, %v", all, err)
	}
	if _, err := Resident(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing file is resident")
	}
}

func TestFillReadsOnlyWhatIsMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pages-1.img")
	const size = 64 << 20
	writeImage(t, path, size)
	evict(t, path)
	// The first half cached by a sequential read (large folios where the file system
	// has them), the second half evicted again (readahead may have read it).
	readSequentially(t, path)
	evictRange(t, path, size/2, size/2)
	missing, err := Missing(path)
	if err != nil {
		t.Fatal(err)
	}
	// The half read may miss a few pages too (see fewMissing).
	var first, second int64
	for _, sp := range missing {
		if sp.Off < size/2 {
			first += sp.Len
		} else {
			second += sp.Len
		}
	}
	if second != size/2 {
		t.Fatalf("missing: %d bytes of the evicted half, want all %d: %v", second, size/2, missing)
	}
	t.Logf("missing: the evicted half, and %d bytes of the half read", first)
	if err := Fill(path, missing); err != nil {
		t.Fatal(err)
	}
	fewMissing(t, "after Fill", path)
	large, err := LargeFolios(path)
	if err != nil {
		t.Logf("folio sizes not checked: %v", err)
		return
	}
	half := size / 2 / os.Getpagesize()
	n := 0
	for _, l := range large[half:] {
		if l {
			n++
		}
	}
	if n != 0 {
		t.Fatalf("Fill cached %d pages of the missing half in large folios", n)
	}
}

// evictRange drops the clean cached pages of a range of path.
func evictRange(t *testing.T, path string, off, n int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

func TestKeeper(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "pages-1.img")
	writeImage(t, big, 8<<20)
	small := filepath.Join(dir, "pages-2.img")
	writeImage(t, small, 1<<20)
	other := filepath.Join(dir, "core-1.img")
	writeImage(t, other, 8<<20)
	k := NewKeeper()
	if primed, _, err := k.Keep(dir); err != nil || primed != 1 {
		t.Fatalf("first Keep primed %d (want 1: the small image and the other file are left), %v", primed, err)
	}
	// Primed once, an image is not primed again (a few pages evicted meanwhile are
	// filled).
	if primed, _, err := k.Keep(dir); err != nil || primed != 0 {
		t.Fatalf("Keep of a primed image primed it again (%d), %v", primed, err)
	}
	evict(t, big)
	if primed, filled, err := k.Keep(dir); err != nil || primed != 0 || filled != 1 {
		t.Fatalf("Keep after an eviction: primed %d, filled %d, %v; want the image filled", primed, filled, err)
	}
	fewMissing(t, "after Keep", big)
	// A new generation's image (a new file at the same path) is primed.
	writeImage(t, big+".new", 8<<20)
	if err := os.Rename(big+".new", big); err != nil {
		t.Fatal(err)
	}
	if primed, _, err := k.Keep(dir); err != nil || primed != 1 {
		t.Fatalf("Keep of a new image primed %d, %v", primed, err)
	}
	if primed, filled, err := k.Keep(filepath.Join(dir, "missing")); err != nil || primed+filled != 0 {
		t.Fatalf("Keep of a directory without images: %d, %d, %v", primed, filled, err)
	}
}

func TestKeeperDoesNotRetryAFailedPrime(t *testing.T) {
	dir := t.TempDir()
	writeImage(t, filepath.Join(dir, "pages-1.img"), 8<<20)
	k := NewKeeper()
	tries := 0
	k.prime = func(string) error { tries++; return errors.New("no fadvise here") }
	if _, _, err := k.Keep(dir); err == nil {
		t.Fatal("no error from a failed prime")
	}
	if primed, filled, err := k.Keep(dir); err != nil || primed+filled != 0 || tries != 1 {
		t.Fatalf("a failed image was tried again: primed %d, filled %d, %v, %d tries", primed, filled, err, tries)
	}
}
