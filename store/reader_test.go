package store

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestReaderOf(t *testing.T) {
	userns := []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.UserNamespace}}
	m := func(c, h, n uint32) []specs.LinuxIDMapping {
		return []specs.LinuxIDMapping{{ContainerID: c, HostID: h, Size: n}}
	}
	for _, tc := range []struct {
		name string
		l    *specs.Linux
		want *Reader
	}{
		{"no linux", nil, nil},
		{"no user namespace", &specs.Linux{UIDMappings: m(0, 1000, 10), GIDMappings: m(0, 1000, 10)}, nil},
		{"mapped root", &specs.Linux{Namespaces: userns, UIDMappings: m(0, 100000, 65536), GIDMappings: m(0, 200000, 65536)}, &Reader{GID: 200000}},
		{"root unmapped", &specs.Linux{Namespaces: userns, UIDMappings: m(1, 100000, 65536), GIDMappings: m(0, 200000, 65536)}, nil},
		{"empty mapping", &specs.Linux{Namespaces: userns, UIDMappings: m(0, 100000, 0), GIDMappings: m(0, 200000, 1)}, nil},
		{"second mapping", &specs.Linux{Namespaces: userns,
			UIDMappings: append(m(1000, 5000, 1), m(0, 100000, 1000)...), GIDMappings: m(0, 200000, 1)}, &Reader{GID: 200000}},
	} {
		got := ReaderOf(&specs.Spec{Linux: tc.l})
		if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
			t.Errorf("%s: ReaderOf = %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if ReaderOf(nil) != nil {
		t.Error("ReaderOf(nil) != nil")
	}
}

// A template of a container in a user namespace: CRIU's restored tasks read its images
// as the container's root, so the images are readable by that root's host group, and
// its generation directory searchable; everything stays root's, and every directory
// above a generation root-only.
func TestCommitForAUserNamespace(t *testing.T) {
	hostG := uint32(300001)
	if os.Geteuid() != 0 {
		hostG = uint32(os.Getegid()) // only root can give files to another group
	}
	uids := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 300000, Size: 65536}}
	gids := []specs.LinuxIDMapping{{ContainerID: 0, HostID: hostG, Size: 65536}}
	spec := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.UserNamespace}}, UIDMappings: uids, GIDMappings: gids}}
	s, err := New(filepath.Join(t.TempDir(), "tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := s.Commit(Meta{Name: "uns", Namespace: "ns", Spec: spec}, func(dir string) error {
		if err := fakeImages(dir); err != nil {
			return err
		}
		return os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	})
	if err != nil {
		t.Fatal(err)
	}
	root, rootG := uint32(os.Geteuid()), uint32(os.Getegid())
	for _, c := range []struct {
		path string
		gid  uint32
		perm os.FileMode
	}{
		{s.Root(), rootG, 0o700},
		{filepath.Join(s.Root(), "ns"), rootG, 0o700},
		{filepath.Join(s.Root(), "ns", "uns"), rootG, 0o700},
		{tpl.Dir, hostG, 0o710},
		{filepath.Join(tpl.Dir, "meta.json"), rootG, 0o600},
		{tpl.Images, hostG, 0o550},
		{filepath.Join(tpl.Images, "inventory.img"), hostG, 0o440},
		{filepath.Join(tpl.Images, "pages-1.img"), hostG, 0o440},
		{filepath.Join(tpl.Images, "sub"), hostG, 0o550},
	} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != root || st.Gid != c.gid || fi.Mode().Perm() != c.perm {
			t.Errorf("%s: %d:%d %v, want %d:%d %v", c.path, st.Uid, st.Gid, fi.Mode().Perm(), root, c.gid, c.perm)
		}
	}
	// The store reads it back, and deletes it (root may; a test run as another user
	// gives its read-only directories write access back first).
	if got, err := s.Get("ns", "uns"); err != nil || got.Generation != tpl.Generation {
		t.Fatalf("get: %+v %v", got, err)
	}
	if os.Geteuid() != 0 {
		_ = filepath.Walk(tpl.Dir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.IsDir() {
				_ = os.Chmod(p, 0o700)
			}
			return nil
		})
	}
	if err := s.Delete("ns", "uns"); err != nil {
		t.Fatal(err)
	}
}
