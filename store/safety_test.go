// Safety of the store against bad names, bad image content and concurrent commits,
// prunes and removals (found by review).
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Delete does not validate the name: ".." removes the whole store (every namespace).
func TestDeleteRefusesDotDot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "templates")
	s, _ := New(root)
	if _, err := s.Commit(Meta{Name: "a", Namespace: "ns1"}, fakeImages); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(Meta{Name: "b", Namespace: "ns2"}, fakeImages); err != nil {
		t.Fatal(err)
	}
	err := s.Delete("ns1", "..")
	_, statErr := os.Stat(root)
	if err == nil || errors.Is(statErr, os.ErrNotExist) {
		t.Fatalf("Delete(\"ns1\", \"..\") removed the whole template store %s", root)
	}
}

func TestDeleteRefusesEmptyName(t *testing.T) {
	root := filepath.Join(t.TempDir(), "templates")
	s, _ := New(root)
	s.Commit(Meta{Name: "a", Namespace: "ns1"}, fakeImages)
	s.Commit(Meta{Name: "b", Namespace: "ns1"}, fakeImages)
	err := s.Delete("ns1", "")
	if _, e := s.Get("ns1", "a"); e != nil || err == nil {
		t.Fatalf("Delete(ns1, \"\") = %v and removed every template of ns1: %v", err, e)
	}
}

// Commit validates Name but not Namespace.
func TestCommitRefusesNamespacePath(t *testing.T) {
	base := t.TempDir()
	s, _ := New(filepath.Join(base, "templates"))
	tm, err := s.Commit(Meta{Name: "x", Namespace: "../../escaped"}, fakeImages)
	if err == nil {
		t.Fatalf("Commit with namespace ../../escaped wrote %s (outside %s)", tm.Dir, s.Root())
	}
}

// A commit whose fill takes over a minute is removed under it by any pruneOld (a
// sandbox release of the same template): tmp's mtime does not move while images/ fills.
func TestLongCommitNotPruned(t *testing.T) {
	s, _ := New(t.TempDir())
	t1, err := s.Commit(Meta{Name: "app", Namespace: "ns"}, fakeImages)
	if err != nil {
		t.Fatal(err)
	}
	release := s.Use(t1)
	_, err = s.Commit(Meta{Name: "app", Namespace: "ns"}, func(images string) error {
		if err := fakeImages(images); err != nil {
			return err
		}
		// 61 s of CRIU dump later (writes into images/ do not touch tmp's mtime):
		old := time.Now().Add(-61 * time.Second)
		os.Chtimes(filepath.Dir(images), old, old)
		release() // a sandbox of generation 1 is destroyed: pruneOld runs
		return nil
	})
	if err != nil {
		t.Fatalf("an in-progress commit was deleted by pruneOld: %v", err)
	}
}

// pruneOld removes a generation a concurrent Commit has renamed into place but not yet
// made current: the Commit then makes "current" point at a removed directory.
func TestPruneSparesGenerationBeingPublished(t *testing.T) {
	s, _ := New(t.TempDir())
	t1, _ := s.Commit(Meta{Name: "app", Namespace: "ns"}, fakeImages)
	release := s.Use(t1)
	// Another process's Commit, between os.Rename(tmp, final) and the symlink swap:
	dir := s.nameDir("ns", "app")
	// (the committing process holds the flock of the directory it renamed):
	g2 := filepath.Join(dir, fmt.Sprintf("g%d", time.Now().UnixNano()))
	os.MkdirAll(filepath.Join(g2, "images"), 0o700)
	fakeImages(filepath.Join(g2, "images"))
	os.WriteFile(filepath.Join(g2, "meta.json"), []byte(`{"name":"app"}`), 0o600)
	held, err := os.Open(g2)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(held.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	release() // this process: a sandbox of g1 destroyed -> pruneOld
	if _, err := os.Stat(g2); err != nil {
		t.Fatalf("pruneOld removed a generation being committed: %v", err)
	}
	held.Close()
	s.pruneOld("ns", "app") // no longer held, not current: an orphan
	if _, err := os.Stat(g2); err == nil {
		t.Fatal("an orphaned generation was kept")
	}
}

// The same race with real concurrent Commits of one name.
func TestConcurrentCommits(t *testing.T) {
	for round := 0; round < 50; round++ {
		s, _ := New(t.TempDir())
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, errs[i] = s.Commit(Meta{Name: "app", Namespace: "ns"}, fakeImages)
			}(i)
		}
		wg.Wait()
		if _, err := s.Get("ns", "app"); err != nil {
			t.Fatalf("round %d: every Commit returned %v, yet Get fails: %v", round, errs, err)
		}
	}
}

// Use of a generation already pruned: no error, no lock.
func TestAcquireOfRemovedGeneration(t *testing.T) {
	s, _ := New(t.TempDir())
	t1, _ := s.Commit(Meta{Name: "app", Namespace: "ns"}, fakeImages)
	s.Commit(Meta{Name: "app", Namespace: "ns"}, fakeImages) // prunes t1 (nobody Uses it yet)
	if rel, err := s.Acquire(t1); err == nil {               // a pod's shim that did Get before the replace
		rel()
		t.Fatalf("Acquire of a removed generation succeeded")
	}
	t2, _ := s.Get("ns", "app")
	rel, err := s.Acquire(t2)
	if err != nil {
		t.Fatal(err)
	}
	rel()
}

// A symlink in the images survives (SyncTree skips it) and Verify follows it.
func TestCommitRefusesSymlinkedImages(t *testing.T) {
	s, _ := New(t.TempDir())
	tm, err := s.Commit(Meta{Name: "app", Namespace: "ns"}, func(images string) error {
		if err := fakeImages(images); err != nil {
			return err
		}
		os.Remove(filepath.Join(images, "descriptors.json"))
		os.Symlink("/etc/hostname", filepath.Join(images, "descriptors.json"))
		return os.Symlink("/etc/shadow", filepath.Join(images, "pages-2.img"))
	})
	if err == nil {
		l, _ := os.Readlink(filepath.Join(tm.Images, "pages-2.img"))
		t.Fatalf("template committed with images symlinked outside it (pages-2.img -> %s)", l)
	}
}

// A FIFO in the images: SyncTree opens it O_RDONLY and blocks forever.
func TestCommitRefusesFifo(t *testing.T) {
	s, _ := New(t.TempDir())
	done := make(chan error, 1)
	go func() {
		_, err := s.Commit(Meta{Name: "app", Namespace: "ns"}, func(images string) error {
			if err := fakeImages(images); err != nil {
				return err
			}
			return syscall.Mkfifo(filepath.Join(images, "zz.img"), 0o600)
		})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a FIFO in the images was committed")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Commit hangs forever in SyncTree on a FIFO in the images")
	}
}

// TestDeleteAndPruneTakeLocksInOneOrder: Delete and pruneOld take the name's lock and the
// store's mutex in the same order (they deadlocked within a few rounds otherwise).
func TestDeleteAndPruneTakeLocksInOneOrder(t *testing.T) {
	s, _ := New(t.TempDir())
	var iter atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100; i++ {
			iter.Store(int64(i))
			if _, err := s.Commit(Meta{Name: "app", Namespace: "ns"}, fakeImages); err != nil {
				t.Error(err)
				return
			}
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); s.pruneOld("ns", "app") }()
			go func() { defer wg.Done(); _ = s.Delete("ns", "app") }()
			wg.Wait()
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("deadlock at iteration %d", iter.Load())
	}
}

// TestCommitDuringPrunes: a commit's new directory is never pruned under it (it was
// between its creation and its flock).
func TestCommitDuringPrunes(t *testing.T) {
	s, _ := New(t.TempDir())
	if _, err := s.Commit(Meta{Name: "app", Namespace: "ns"}, fakeImages); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				s.pruneOld("ns", "app")
			}
		}
	}()
	fails := 0
	for i := 0; i < 200; i++ {
		if _, err := s.Commit(Meta{Name: "app", Namespace: "ns"}, fakeImages); err != nil {
			fails++
		}
	}
	close(stop)
	wg.Wait()
	if fails > 0 {
		t.Fatalf("%d of 200 commits failed: a prune removed their directory before its flock", fails)
	}
}
