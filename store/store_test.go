package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warmshim/warm/internal/criutest"
)

func fakeImages(dir string) error {
	if err := criutest.WriteImages(dir); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "pages-1.img"), []byte("x"), 0o644)
}

func TestCommitGetReplaceDelete(t *testing.T) {
	s, err := New(filepath.Join(t.TempDir(), "tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	t1, err := s.Commit(Meta{Name: "py", Namespace: "ns", Layers: "a"}, fakeImages)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("ns", "py")
	if err != nil || got.Generation != t1.Generation || got.Layers != "a" {
		t.Fatalf("get: %+v %v", got, err)
	}
	// Root-only, all the way down.
	_ = filepath.Walk(s.Root(), func(p string, fi os.FileInfo, err error) error {
		if fi.Mode()&os.ModeSymlink != 0 {
			return nil
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v", p, fi.Mode().Perm())
		}
		return nil
	})
	release := s.Use(t1)
	t2, err := s.Commit(Meta{Name: "py", Namespace: "ns", Layers: "b"}, fakeImages)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get("ns", "py"); got.Generation != t2.Generation {
		t.Fatal("replace did not make the new generation current")
	}
	if g, err := s.CurrentGeneration("ns", "py"); err != nil || g != t2.Generation {
		t.Fatalf("CurrentGeneration = %d, %v; want %d", g, err, t2.Generation)
	}
	if _, err := os.Stat(t1.Dir); err != nil {
		t.Fatal("a generation in use was removed")
	}
	if err := s.Delete("ns", "py"); !errors.Is(err, ErrInUse) {
		t.Fatalf("delete of a template in use: %v", err)
	}
	release()
	if _, err := os.Stat(t1.Dir); !os.IsNotExist(err) {
		t.Fatal("an old generation no longer in use was kept")
	}
	if err := s.Delete("ns", "py"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("ns", "py"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

// TestFailedFirstCommitLeavesNothing: a template whose first checkpoint fails (CRIU
// killed at checkpoint_timeout, a full disk) leaves no directory of its name, and the
// name can be committed afterwards.
func TestFailedFirstCommitLeavesNothing(t *testing.T) {
	s, err := New(filepath.Join(t.TempDir(), "tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(Meta{Name: "app", Namespace: "ns"}, func(string) error { return errors.New("checkpoint killed") }); err == nil {
		t.Fatal("want error")
	}
	if _, err := os.Stat(s.nameDir("ns", "app")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("name directory after a failed first commit: %v, want none", err)
	}
	if _, err := s.Get("ns", "app"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after a failed first commit: %v, want ErrNotFound", err)
	}
	if _, err := s.Commit(Meta{Name: "app", Namespace: "ns"}, fakeImages); err != nil {
		t.Fatalf("commit after a failed first one: %v", err)
	}
}

func TestFailedCommitLeavesCurrent(t *testing.T) {
	s, _ := New(t.TempDir())
	t1, err := s.Commit(Meta{Name: "app", Namespace: "ns"}, fakeImages)
	if err != nil {
		t.Fatal(err)
	}
	// A dump that fails half way (a full disk) and one that writes an incomplete set.
	if _, err := s.Commit(Meta{Name: "app", Namespace: "ns"}, func(string) error { return errors.New("no space left on device") }); err == nil {
		t.Fatal("want error")
	}
	if _, err := s.Commit(Meta{Name: "app", Namespace: "ns"}, func(d string) error {
		return os.WriteFile(filepath.Join(d, "pages-1.img"), []byte("x"), 0o600)
	}); err == nil {
		t.Fatal("an incomplete image set was committed")
	}
	// A corrupted inventory (a dump cut short) is refused too.
	if _, err := s.Commit(Meta{Name: "app", Namespace: "ns"}, func(d string) error {
		if err := fakeImages(d); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(d, "inventory.img"), []byte("garbage"), 0o600)
	}); err == nil {
		t.Fatal("an unreadable inventory was committed")
	}
	got, err := s.Get("ns", "app")
	if err != nil || got.Generation != t1.Generation {
		t.Fatalf("current changed after failed commits: %+v %v", got, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(t1.Dir))
	if len(entries) != 3 { // current, one generation and the name's lock file
		t.Fatalf("left behind: %v", entries)
	}
}

func TestValidName(t *testing.T) {
	for _, n := range []string{"py", "a.b-c_d", "X1", "9", strings.Repeat("a", 63)} {
		if err := ValidName(n); err != nil {
			t.Error(err)
		}
	}
	for _, n := range []string{"", "../x", "a/b", ".hidden", "-x", "_x", strings.Repeat("a", 64), "é", "a b", "a\n"} {
		if err := ValidName(n); err == nil {
			t.Errorf("%q accepted", n)
		}
	}
}

// Another process (here a second Store on the same root, as a pod's shim has) that
// restores from a generation keeps it from Delete and from pruning.
func TestUseHoldsAcrossStores(t *testing.T) {
	root := t.TempDir()
	poolShim, _ := New(root)
	podShim, _ := New(root)
	t1, err := poolShim.Commit(Meta{Name: "app", Namespace: "ns"}, fakeImages)
	if err != nil {
		t.Fatal(err)
	}
	got, err := podShim.Get("ns", "app")
	if err != nil {
		t.Fatal(err)
	}
	release := podShim.Use(got)
	if err := poolShim.Delete("ns", "app"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "another shim") {
		t.Fatalf("delete of a template another store uses: %v", err)
	}
	if _, err := poolShim.Commit(Meta{Name: "app", Namespace: "ns"}, fakeImages); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(t1.Dir); err != nil {
		t.Fatal("a generation another store uses was pruned")
	}
	release()
	if _, err := os.Stat(t1.Dir); !os.IsNotExist(err) {
		t.Fatal("the old generation was kept after its last use")
	}
	if err := poolShim.Delete("ns", "app"); err != nil {
		t.Fatal(err)
	}
}

// TestUnreadableTemplateIsListed: a template whose meta.json is corrupt is not served
// (List skips it) but listed for operators with its error, and Delete removes it.
func TestUnreadableTemplateIsListed(t *testing.T) {
	s, err := New(filepath.Join(t.TempDir(), "tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"good", "broken"} {
		if _, err := s.Commit(Meta{Name: name, Namespace: "ns", Layers: "a"}, fakeImages); err != nil {
			t.Fatal(err)
		}
	}
	broken, err := s.Get("ns", "broken")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(broken.Dir, "meta.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	list, _, err := s.ListAll("ns")
	if err != nil || len(list) != 1 || list[0].Name != "good" {
		t.Fatalf("ListAll = %v, %v: want only the readable template", list, err)
	}
	entries, err := s.Entries("ns")
	if err != nil || len(entries) != 2 {
		t.Fatalf("Entries = %+v, %v", entries, err)
	}
	if e := entries[0]; e.Name != "broken" || !strings.Contains(e.Error, "meta.json") {
		t.Fatalf("unreadable entry %+v: want its error naming meta.json", e)
	}
	if e := entries[1]; e.Name != "good" || e.Error != "" {
		t.Fatalf("readable entry %+v", e)
	}
	if err := s.Delete("ns", "broken"); err != nil {
		t.Fatalf("delete of an unreadable template: %v", err)
	}
	if entries, _ := s.Entries("ns"); len(entries) != 1 {
		t.Fatalf("after delete: %+v", entries)
	}
}
