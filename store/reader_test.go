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
		{"mapped root", &specs.Linux{Namespaces: userns, UIDMappings: m(0, 100000, 65536), GIDMappings: m(0, 200000, 65536)}, &Reader{UID: 100000, GID: 200000}},
		{"root unmapped", &specs.Linux{Namespaces: userns, UIDMappings: m(1, 100000, 65536), GIDMappings: m(0, 200000, 65536)}, nil},
		{"empty mapping", &specs.Linux{Namespaces: userns, UIDMappings: m(0, 100000, 0), GIDMappings: m(0, 200000, 1)}, nil},
		{"second mapping", &specs.Linux{Namespaces: userns,
			UIDMappings: append(m(1000, 5000, 1), m(0, 100000, 1000)...), GIDMappings: m(0, 200000, 1)}, &Reader{UID: 100000, GID: 200000}},
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
// as the container's root, so the images are that user's (read-only); everything else,
// and every directory above a generation, stays root's.
func TestCommitForAUserNamespace(t *testing.T) {
	host, hostG := uint32(300000), uint32(300001)
	if os.Geteuid() != 0 {
		host, hostG = uint32(os.Geteuid()), uint32(os.Getegid()) // only root can give files away
	}
	uids := []specs.LinuxIDMapping{{ContainerID: 0, HostID: host, Size: 65536}}
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
		path     string
		uid, gid uint32
		perm     os.FileMode
	}{
		{s.Root(), root, rootG, 0o700},
		{filepath.Join(s.Root(), "ns"), root, rootG, 0o700},
		{filepath.Join(s.Root(), "ns", "uns"), root, rootG, 0o700},
		{tpl.Dir, root, rootG, 0o711},
		{filepath.Join(tpl.Dir, "meta.json"), root, rootG, 0o600},
		{tpl.Images, host, hostG, 0o500},
		{filepath.Join(tpl.Images, "inventory.img"), host, hostG, 0o400},
		{filepath.Join(tpl.Images, "pages-1.img"), host, hostG, 0o400},
		{filepath.Join(tpl.Images, "sub"), host, hostG, 0o500},
	} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != c.uid || st.Gid != c.gid || fi.Mode().Perm() != c.perm {
			t.Errorf("%s: %d:%d %v, want %d:%d %v", c.path, st.Uid, st.Gid, fi.Mode().Perm(), c.uid, c.gid, c.perm)
		}
	}
	// The store reads it back, and deletes it.
	if got, err := s.Get("ns", "uns"); err != nil || got.Generation != tpl.Generation {
		t.Fatalf("get: %+v %v", got, err)
	}
	if err := s.Delete("ns", "uns"); err != nil {
		t.Fatal(err)
	}
}
