package fastdelete

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	shimapi "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/runc"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	runcC "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/warmshim/warm/internal/shimargs"
	warmshim "github.com/warmshim/warm/shim"

	"github.com/warmshim/warm/internal/testenv"
)

// libraryAnswer is what containerd's shim library writes for the delete action: the
// shim's manager's Stop, run in the bundle, marshalled by proto.Marshal.
func libraryAnswer(t *testing.T, ns, id, bundle string) []byte {
	t.Helper()
	t.Chdir(bundle)
	ss, err := warmshim.NewManager().Stop(namespaces.WithNamespace(context.Background(), ns), id)
	if err != nil {
		t.Fatalf("the shim's Stop: %v", err)
	}
	data, err := proto.Marshal(&shimapi.DeleteResponse{
		Pid:        uint32(ss.Pid),
		ExitStatus: uint32(ss.ExitStatus),
		ExitedAt:   protobuf.ToTimestamp(ss.ExitedAt),
	})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// The encoding is byte for byte proto.Marshal's.
func TestResponse(t *testing.T) {
	for _, e := range []exit{
		{Timestamp: time.Date(2026, 12, 2, 16, 40, 1, 123456789, time.UTC), Pid: 4321, Status: 137},
		{Timestamp: time.Date(2026, 12, 2, 16, 40, 1, 0, time.UTC), Pid: 1, Status: 0},
		{Timestamp: time.Unix(0, 5), Pid: 1 << 22, Status: 255},
		{Timestamp: time.Unix(-1, 0), Pid: 7, Status: 1},
	} {
		want, err := proto.Marshal(&shimapi.DeleteResponse{Pid: uint32(e.Pid), ExitStatus: uint32(e.Status), ExitedAt: protobuf.ToTimestamp(e.Timestamp)})
		if err != nil {
			t.Fatal(err)
		}
		if got := response(e); !bytes.Equal(got, want) {
			t.Errorf("%+v: got %x, want %x", e, got, want)
		}
	}
}

// fixture is a bundle of container id in namespace ns after its shim cleaned up: the
// exit recorded by containerd's runc package, runc's root named in options.json and
// without the container, an empty rootfs directory.
type fixture struct {
	ns, id, bundle, runcRoot string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	dir := t.TempDir()
	f := fixture{ns: "default", id: "c1", bundle: filepath.Join(dir, "bundles", "c1"), runcRoot: filepath.Join(dir, "runc")}
	for _, d := range []string{filepath.Join(f.bundle, "rootfs"), filepath.Join(f.runcRoot, f.ns)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	f.write(t, "options.json", `{"root":"`+f.runcRoot+`","binary_name":"runc"}`)
	f.write(t, "runtime", "runc")
	f.write(t, "init.pid", "4321")
	if err := runc.WriteExitStatus(f.bundle, runcC.Exit{Timestamp: time.Now(), Pid: 4321, Status: 137}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f fixture) write(t *testing.T, name, data string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.bundle, name), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f fixture) args() []string {
	return []string{"-namespace", f.ns, "-address", "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd",
		"-id", f.id, "-bundle", f.bundle, "delete"}
}

func (f fixture) answer(t *testing.T) ([]byte, bool) {
	t.Helper()
	a, ok := shimargs.Parse(f.args())
	if !ok {
		t.Fatalf("%q did not parse", f.args())
	}
	return Answer(a, f.bundle)
}

// The front answers what the shim answers, for a container whose exit was recorded.
func TestAnswerIsTheShims(t *testing.T) {
	for name, change := range map[string]func(t *testing.T, f fixture){
		"as left":           func(*testing.T, fixture) {},
		"exit 0":            func(t *testing.T, f fixture) { writeExit(t, f, 0) },
		"no rootfs":         func(t *testing.T, f fixture) { os.Remove(filepath.Join(f.bundle, "rootfs")) },
		"no options":        func(t *testing.T, f fixture) { os.Remove(filepath.Join(f.bundle, "options.json")) },
		"options, no root":  func(t *testing.T, f fixture) { f.write(t, "options.json", `{"binary_name":"runc"}`) },
		"runc root missing": func(t *testing.T, f fixture) { os.RemoveAll(f.runcRoot) },
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			change(t, f)
			got, ok := f.answer(t)
			if !ok {
				t.Fatal("the front did not answer")
			}
			if want := libraryAnswer(t, f.ns, f.id, f.bundle); !bytes.Equal(got, want) {
				t.Fatalf("got %x, the shim answers %x", got, want)
			}
		})
	}
}

func writeExit(t *testing.T, f fixture, status int) {
	t.Helper()
	if err := runc.WriteExitStatus(f.bundle, runcC.Exit{Timestamp: time.Now(), Pid: 99, Status: status}); err != nil {
		t.Fatal(err)
	}
}

// Whenever the shim has more to do than read the exit, or the front cannot tell, the
// shim answers: the front leaves everything as it was.
func TestNoAnswer(t *testing.T) {
	cases := map[string]func(t *testing.T, f *fixture){
		"runc state present": func(t *testing.T, f *fixture) {
			if err := os.Mkdir(filepath.Join(f.runcRoot, f.ns, f.id), 0o700); err != nil {
				t.Fatal(err)
			}
		},
		"rootfs not empty":    func(t *testing.T, f *fixture) { f.write(t, "rootfs/etc", "x") },
		"rootfs a file":       func(t *testing.T, f *fixture) { os.Remove(filepath.Join(f.bundle, "rootfs")); f.write(t, "rootfs", "") },
		"no exit recorded":    func(t *testing.T, f *fixture) { os.Remove(filepath.Join(f.bundle, "exit.json")) },
		"exit invalid":        func(t *testing.T, f *fixture) { f.write(t, "exit.json", `{"Pid":0,"Status":1}`) },
		"exit malformed":      func(t *testing.T, f *fixture) { f.write(t, "exit.json", `{"Pid":`) },
		"options malformed":   func(t *testing.T, f *fixture) { f.write(t, "options.json", `{"root":`) },
		"options unreadable":  optionsDir,
		"no id":               func(t *testing.T, f *fixture) { f.id = "" },
		"rootfs a mount root": mountRootfs,
	}
	for name, change := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			change(t, &f)
			if out, ok := f.answer(t); ok {
				t.Fatalf("answered %x", out)
			}
		})
	}
	// Other command lines.
	f := newFixture(t)
	for _, args := range [][]string{
		{"-namespace", f.ns, "-id", f.id, "start"},
		{"-id", f.id, "delete"},
		{"-namespace", f.ns, "-id", f.id},
	} {
		a, ok := shimargs.Parse(args)
		if !ok {
			continue
		}
		if out, ok := Answer(a, f.bundle); ok {
			t.Fatalf("%q answered %x", args, out)
		}
	}
}

// optionsDir makes options.json a directory: reading it fails.
func optionsDir(t *testing.T, f *fixture) {
	t.Helper()
	if err := os.Remove(filepath.Join(f.bundle, "options.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(f.bundle, "options.json"), 0o700); err != nil {
		t.Fatal(err)
	}
}

// mountRootfs mounts an empty tmpfs on the rootfs (root only): the shim unmounts it.
func mountRootfs(t *testing.T, f *fixture) {
	t.Helper()
	testenv.NeedRoot(t, "mounting a tmpfs on the rootfs")
	rootfs := filepath.Join(f.bundle, "rootfs")
	if err := unix.Mount("tmpfs", rootfs, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(rootfs, unix.MNT_DETACH) })
}
