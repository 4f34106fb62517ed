package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/runc"
	runcC "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/internal/bootstraptest"
	"github.com/warmshim/warm/internal/fastdelete"
	"github.com/warmshim/warm/internal/fastjoin"
	"github.com/warmshim/warm/internal/group"
	"github.com/warmshim/warm/internal/shimargs"

	"github.com/warmshim/warm/internal/testenv"
)

// The C front (c/front.c) is held to this Go front: whenever it answers, it answers
// what fastjoin or fastdelete answers, and whenever they do not answer, it hands the
// invocation to the shim (here a stub that prints its arguments and stdin) with the
// same arguments and stdin. It may hand over more (what it does not read as Go does);
// the cases marked fast are the usual ones it must answer itself.

// built is the C front's build, shared by the tests (TestMain removes it).
var built struct {
	once      sync.Once
	dir, path string
	err       error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// cFront builds c/front.c (once) into bin/ of a directory with a stub shim in
// libexec/warm, and returns the front's path.
func cFront(t *testing.T) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		testenv.Missing(t, "a C compiler (cc): without one, make build installs the Go front and the C front is not tested")
	}
	built.once.Do(func() { built.dir, built.path, built.err = buildCFront(cc) })
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

func buildCFront(cc string) (dir, front string, err error) {
	if dir, err = os.MkdirTemp("", "cfront-"); err != nil {
		return "", "", err
	}
	front = filepath.Join(dir, "bin", "containerd-shim-warm-v2")
	stub := filepath.Join(dir, "libexec", "warm", "containerd-shim-warm-v2")
	for _, d := range []string{filepath.Dir(front), filepath.Dir(stub)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return dir, "", err
		}
	}
	if out, err := exec.Command(cc, "-O2", "-Wall", "-Wextra", "-Werror", "-static", "-o", front, "c/front.c").CombinedOutput(); err != nil {
		return dir, "", fmt.Errorf("cc: %w\n%s", err, out)
	}
	if err := os.WriteFile(stub, []byte("#!/bin/sh\nprintf 'SHIM %s\\n' \"$*\"\ncat\n"), 0o755); err != nil {
		return dir, "", err
	}
	return dir, front, nil
}

// runC runs the C front in dir with args and stdin; handed reports whether it handed
// the invocation to the shim, and out is its answer, or what the shim was given.
func runC(t *testing.T, front, dir string, args []string, stdin []byte) (out []byte, handed bool) {
	t.Helper()
	cmd := exec.Command(front, args...)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("C front %q: %v: %s", args, err, stderr.String())
	}
	prefix := "SHIM " + strings.Join(args, " ") + "\n"
	if bytes.HasPrefix(out, []byte("SHIM ")) {
		if !bytes.HasPrefix(out, []byte(prefix)) {
			t.Fatalf("handed to the shim as %q, want %q", strings.SplitN(string(out), "\n", 2)[0], prefix)
		}
		return out[len(prefix):], true
	}
	return out, false
}

func startArgs(ns, id string) []string {
	return []string{"-namespace", ns, "-address", "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd", "-id", id, "start"}
}

func TestCFrontStart(t *testing.T) {
	front := cFront(t)
	sockDir := t.TempDir()
	grpc := "/run/test/containerd.sock"
	// A shim serves these groups of namespace "ns".
	for _, key := range []string{group.Pool, "g1", "pod-1"} {
		d := sha256.Sum256([]byte(filepath.Join(grpc, "ns", key)))
		l, err := net.Listen("unix", filepath.Join(sockDir, fmt.Sprintf("%x", d)))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
	}
	cfg := func(ann string) string {
		return `{"ociVersion":"1.2.0","process":{"args":["sh","-c","echo \"hi\"\n"],"env":["A=1"]},"root":{"path":"rootfs"},` +
			`"annotations":` + ann + `,"linux":{"namespaces":[{"type":"pid"}]}}`
	}
	tmpl := `{"io.containerd.warm.template":"py"}`
	sd, empty := sockDir, ""
	cases := []struct {
		name, config string
		args         []string
		params       []byte
		fast         bool
	}{
		{"template", cfg(tmpl), nil, nil, true},
		{"template, socket dir given", cfg(tmpl), nil, bootstraptest.Params(t, "c1", "ns", grpc, &sd), true},
		{"group", cfg(`{"io.containerd.warm.group":"g1","other":"x"}`), nil, nil, true},
		{"debug flag and = forms", cfg(tmpl), []string{"-debug", "-namespace=ns", "--address", "/a", "-id=c1", "start"}, nil, true},
		{"CRI container, its template", cfg(`{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"app",` +
			`"io.containerd.warm.template/app":"py","io.kubernetes.cri.sandbox-id":"pod-1"}`), nil, nil, true},
		{"CRI container, another's template", cfg(`{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"app",` +
			`"io.containerd.warm.template/web":"py","io.kubernetes.cri.sandbox-id":"pod-1"}`), nil, nil, true},
		{"CRI sandbox keeps no template", cfg(`{"io.kubernetes.cri.container-type":"sandbox","io.containerd.warm.template":"py",` +
			`"io.kubernetes.cri.sandbox-id":"pod-1"}`), nil, nil, true},
		{"escaped JSON in another annotation", cfg(`{"kubectl.kubernetes.io/last-applied-configuration":"{\"a\":\"\\u00e9\\n\"}",` +
			`"io.containerd.warm.template":"py","n":null}`), nil, nil, true},
		{"CRI container, its group", cfg(`{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"app",` +
			`"io.containerd.warm.group/app":"g1","io.kubernetes.cri.sandbox-id":"pod-1"}`), nil, nil, false},
		{"CRI container, another's group", cfg(`{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"app",` +
			`"io.containerd.warm.group/web":"g1","io.kubernetes.cri.sandbox-id":"pod-1"}`), nil, nil, false},
		{"group that is a path", cfg(`{"io.containerd.warm.group":"../ns/g1"}`), nil, nil, false},
		{"no annotations: a shim of its own", cfg(`null`), nil, nil, true},
		{"no such group served", cfg(`{"io.containerd.warm.group":"nobody"}`), nil, nil, true},
		{"empty socket dir is the default", cfg(tmpl), nil, bootstraptest.Params(t, "c1", "ns", grpc, &empty), true},
		{"params for another id", cfg(tmpl), nil, bootstraptest.Params(t, "c2", "ns", grpc, &sd), true},
		{"params for another namespace", cfg(tmpl), nil, bootstraptest.Params(t, "c1", "ns2", grpc, &sd), true},
		{"truncated params", cfg(tmpl), nil, []byte{0x0a, 0x10, 'c'}, true},
		{"not JSON", `{"annotations":{"io.containerd.warm.template":"py"}`, nil, nil, true},
		{"trailing data", cfg(tmpl) + ` x`, nil, nil, true},
		{"a number annotation", cfg(`{"io.containerd.warm.template":"py","n":1}`), nil, nil, true},
		{"annotations not an object", cfg(`["x"]`), nil, nil, true},
		{"capitalised annotations", strings.Replace(cfg(tmpl), `"annotations"`, `"Annotations"`, 1), nil, nil, false},
		{"escaped template value", cfg(`{"io.containerd.warm.template":"p\u0079"}`), nil, nil, false},
		{"escaped key", cfg(`{"io.containerd.warm.gro\u0075p":"g1"}`), nil, nil, false},
		{"duplicate template", cfg(`{"io.containerd.warm.template":"","io.containerd.warm.template":"py"}`), nil, nil, false},
		{"annotations twice", `{"annotations":{"io.containerd.warm.template":"py"},"annotations":null}`, nil, nil, true},
		{"unknown flag", cfg(tmpl), []string{"-namespace", "ns", "-id", "c1", "-zz", "start"}, nil, true},
		{"two arguments", cfg(tmpl), []string{"-namespace", "ns", "-id", "c1", "start", "x"}, nil, true},
		{"no namespace", cfg(tmpl), []string{"-id", "c1", "start"}, nil, true},
		{"flag without a value", cfg(tmpl), []string{"-namespace", "ns", "start", "-id"}, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if args == nil {
				args = startArgs("ns", "c1")
			}
			in := tc.params
			if in == nil {
				in = bootstraptest.Params(t, "c1", "ns", grpc, &sd)
			}
			goDir, cDir := t.TempDir(), t.TempDir()
			for _, d := range []string{goDir, cDir} {
				if err := os.WriteFile(filepath.Join(d, "config.json"), []byte(tc.config), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var want []byte
			a, parsed := shimargs.Parse(args)
			goOK := false
			if parsed && fastjoin.IsStart(a) {
				want, goOK = fastjoin.Answer(a, in, goDir)
			}
			got, handed := runC(t, front, cDir, args, in)
			switch {
			case handed && goOK && tc.fast:
				t.Fatalf("the C front handed over what it must answer (%x)", want)
			case handed && !bytes.Equal(got, in) && parsed && fastjoin.IsStart(a):
				t.Fatalf("the shim was given stdin %x, want %x", got, in)
			case !handed && !goOK:
				t.Fatalf("the C front answered %x where the Go front hands over", got)
			case !handed && !bytes.Equal(got, want):
				t.Fatalf("C answered %x, Go %x", got, want)
			}
			if !handed {
				l1, e1 := os.Readlink(filepath.Join(goDir, "s"))
				l2, e2 := os.Readlink(filepath.Join(cDir, "s"))
				if l1 != l2 || (e1 == nil) != (e2 == nil) {
					t.Fatalf("bundle's s: C %q %v, Go %q %v", l2, e2, l1, e1)
				}
			}
		})
	}
}

// deleteFixture is a bundle of container c1 in namespace ns after its shim cleaned up
// (as fastdelete's tests make it), with changes applied.
func deleteFixture(t *testing.T, change func(t *testing.T, bundle, runcRoot string)) (bundle string) {
	t.Helper()
	dir := t.TempDir()
	bundle, root := filepath.Join(dir, "bundles", "c1"), filepath.Join(dir, "runc")
	for _, d := range []string{filepath.Join(bundle, "rootfs"), filepath.Join(root, "ns")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bundle, "options.json"), []byte(`{"root":"`+root+`","binary_name":"runc"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 12, 2, 16, 40, 1, 123456789, time.UTC)
	if err := runc.WriteExitStatus(bundle, runcC.Exit{Timestamp: ts, Pid: 4321, Status: 137}); err != nil {
		t.Fatal(err)
	}
	change(t, bundle, root)
	return bundle
}

func TestCFrontDelete(t *testing.T) {
	front := cFront(t)
	write := func(name, data string) func(*testing.T, string, string) {
		return func(t *testing.T, bundle, _ string) {
			if err := os.WriteFile(filepath.Join(bundle, name), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	exitAt := func(ts time.Time, pid, status int) func(*testing.T, string, string) {
		return func(t *testing.T, bundle, _ string) {
			if err := runc.WriteExitStatus(bundle, runcC.Exit{Timestamp: ts, Pid: pid, Status: status}); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []struct {
		name   string
		change func(t *testing.T, bundle, runcRoot string)
		fast   bool
	}{
		{"as left", func(*testing.T, string, string) {}, true},
		{"exit 0, no nanoseconds", exitAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), 1, 0), true},
		{"a zone", exitAt(time.Date(2024, 2, 29, 23, 59, 59, 5000, time.FixedZone("x", -(5*3600+30*60))), 77, 255), true},
		{"local time", exitAt(time.Now(), 99, 3), true},
		{"no rootfs", func(_ *testing.T, b, _ string) { os.Remove(filepath.Join(b, "rootfs")) }, true},
		{"no options", func(_ *testing.T, b, _ string) { os.Remove(filepath.Join(b, "options.json")) }, true},
		{"options without root", write("options.json", `{"binary_name":"runc","root":null}`), true},
		{"runc state there", func(_ *testing.T, _, r string) { os.MkdirAll(filepath.Join(r, "ns", "c1"), 0o700) }, true},
		{"rootfs not empty", func(_ *testing.T, b, _ string) { os.WriteFile(filepath.Join(b, "rootfs", "f"), nil, 0o600) }, true},
		{"rootfs a file", func(_ *testing.T, b, _ string) {
			os.Remove(filepath.Join(b, "rootfs"))
			os.WriteFile(filepath.Join(b, "rootfs"), nil, 0o600)
		}, true},
		{"no exit", func(_ *testing.T, b, _ string) { os.Remove(filepath.Join(b, "exit.json")) }, true},
		{"pid 0", write("exit.json", `{"Timestamp":"2026-12-02T16:40:01Z","Pid":0,"Status":1}`), true},
		{"negative status", write("exit.json", `{"Timestamp":"2026-12-02T16:40:01Z","Pid":5,"Status":-1}`), true},
		{"zero time", write("exit.json", `{"Timestamp":"0001-01-01T00:00:00Z","Pid":5,"Status":1}`), true},
		{"not a time", write("exit.json", `{"Timestamp":"yesterday","Pid":5,"Status":1}`), true},
		{"pid a string", write("exit.json", `{"Timestamp":"2026-12-02T16:40:01Z","Pid":"5","Status":1}`), true},
		{"pid fractional", write("exit.json", `{"Timestamp":"2026-12-02T16:40:01Z","Pid":5.5,"Status":1}`), true},
		{"malformed exit", write("exit.json", `{"Timestamp":`), true},
		{"malformed options", write("options.json", `{"root":`), true},
		{"options root a number", write("options.json", `{"root":1}`), true},
		{"lower-case exit keys", write("exit.json", `{"timestamp":"2026-12-02T16:40:01Z","pid":5,"status":1}`), false},
		{"capitalised options root", func(t *testing.T, b, r string) { write("options.json", `{"Root":"`+r+`"}`)(t, b, r) }, false},
		{"unknown exit key", write("exit.json", `{"Timestamp":"2026-12-02T16:40:01.5+01:00","Pid":5,"Status":1,"x":[1,{"y":null}]}`), true},
	}
	if os.Geteuid() == 0 {
		// A rootfs still mounted: the shim unmounts it.
		cases = append(cases, struct {
			name   string
			change func(t *testing.T, bundle, runcRoot string)
			fast   bool
		}{"rootfs a mount root", func(t *testing.T, b, _ string) {
			rootfs := filepath.Join(b, "rootfs")
			if err := unix.Mount("tmpfs", rootfs, "tmpfs", 0, ""); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = unix.Unmount(rootfs, unix.MNT_DETACH) })
		}, true})
	} else if testenv.Integration() {
		t.Fatal("not root: the mounted rootfs case needs root to mount")
	}
	args := []string{"-namespace", "ns", "-address", "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd", "-id", "c1", "-bundle", "/b", "delete"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bundle := deleteFixture(t, tc.change)
			a, _ := shimargs.Parse(args)
			want, goOK := fastdelete.Answer(a, bundle)
			got, handed := runC(t, front, bundle, args, nil)
			switch {
			case handed && goOK && tc.fast:
				t.Fatalf("the C front handed over what it must answer (%x)", want)
			case !handed && !goOK:
				t.Fatalf("the C front answered %x where the Go front hands over", got)
			case !handed && !bytes.Equal(got, want):
				t.Fatalf("C answered %x, Go %x", got, want)
			}
		})
	}
}

// Other actions and command lines go to the shim untouched.
func TestCFrontHandsOver(t *testing.T) {
	front := cFront(t)
	for _, args := range [][]string{
		{"-namespace", "ns", "-id", "c1", "-address", "/a"},
		{"-v"},
		{"-info"},
		{"-namespace", "ns", "-id", "c1", "--", "start"},
		{"-namespace", "ns", "-id", "c1", "-debug=true", "start"},
	} {
		if _, handed := runC(t, front, t.TempDir(), args, []byte("in")); !handed {
			t.Errorf("%q: answered", args)
		}
	}
}
