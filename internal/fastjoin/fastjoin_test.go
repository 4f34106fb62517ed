package fastjoin

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	containerdshim "github.com/containerd/containerd/v2/pkg/shim"
	"google.golang.org/protobuf/proto"

	"github.com/warmshim/warm/internal/bootstraptest"
	"github.com/warmshim/warm/internal/group"
	"github.com/warmshim/warm/internal/shimargs"
)

func TestParseParams(t *testing.T) {
	dir := "/run/x/s"
	p, err := parseParams(bootstraptest.Params(t, "c1", "k8s.io", "/run/containerd/containerd.sock", &dir))
	if err != nil {
		t.Fatal(err)
	}
	want := params{instanceID: "c1", namespace: "k8s.io", grpcAddress: "/run/containerd/containerd.sock", socketDir: dir}
	if p != want {
		t.Fatalf("got %+v, want %+v", p, want)
	}
	if p, err := parseParams(bootstraptest.Params(t, "c1", "ns", "/a", nil)); err != nil || p.socketDir != "" {
		t.Fatalf("without a socket dir: %+v %v", p, err)
	}
	if _, err := parseParams([]byte{0x0a, 0x10, 'x'}); err == nil {
		t.Fatal("a truncated field parsed")
	}
}

// The answer is byte for byte what the shim's manager answers through proto.Marshal.
func TestResult(t *testing.T) {
	addr := "unix:///run/containerd/s/0123abcd"
	want, err := proto.Marshal(&bootapi.BootstrapResult{Version: 3, Address: addr, Protocol: "ttrpc"})
	if err != nil {
		t.Fatal(err)
	}
	if got := result(addr); !bytes.Equal(got, want) {
		t.Fatalf("got %x, want %x", got, want)
	}
}

// The socket address is containerd's.
func TestSocketAddress(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	want, err := containerdshim.CreateSocketAddress(ctx, "/run/containerd/s", "/run/containerd/containerd.sock", "pod-1", false)
	if err != nil {
		t.Fatal(err)
	}
	if got := socketAddress("/run/containerd/s", "/run/containerd/containerd.sock", "k8s.io", "pod-1"); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestAnswer(t *testing.T) {
	const grpc, ns = "/run/test/containerd.sock", "default"
	socketDir := t.TempDir()
	bundle := func(t *testing.T, ann map[string]string) string {
		t.Helper()
		dir := t.TempDir()
		data, _ := json.Marshal(map[string]any{"ociVersion": "1.2.0", "annotations": ann})
		if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	// The pool shim of ns serves.
	addr := socketAddress(socketDir, grpc, ns, group.Pool)
	l, err := net.Listen("unix", addr[len("unix://"):])
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	args := []string{"-namespace", ns, "-address", grpc, "-publish-binary", "/usr/bin/containerd", "-id", "c1", "start"}
	hit := map[string]string{group.TemplateAnnotation: "py"}

	t.Run("join", func(t *testing.T) {
		dir := bundle(t, hit)
		out, ok := answer(args, bootstraptest.Params(t, "c1", ns, grpc, &socketDir), dir)
		if !ok {
			t.Fatal("no answer for a container of a running group")
		}
		var res bootapi.BootstrapResult
		if err := proto.Unmarshal(out, &res); err != nil || res.Address != addr || res.Version != 3 || res.Protocol != "ttrpc" {
			t.Fatalf("answer %+v (%v), want address %s", &res, err, addr)
		}
		if l, err := os.Readlink(filepath.Join(dir, "s")); err != nil || l != socketDir {
			t.Fatalf("bundle's socket dir link %q %v", l, err)
		}
		// Again in the same bundle: the link is replaced.
		if _, ok := answer(args, bootstraptest.Params(t, "c1", ns, grpc, &socketDir), dir); !ok {
			t.Fatal("second start in the same bundle")
		}
	})
	t.Run("debug and flag forms", func(t *testing.T) {
		a := []string{"-debug", "--namespace=" + ns, "-address", grpc, "-id=c1", "start"}
		if _, ok := answer(a, bootstraptest.Params(t, "c1", ns, grpc, &socketDir), bundle(t, hit)); !ok {
			t.Fatal("no answer")
		}
	})
	for _, c := range []struct {
		name  string
		args  []string
		input []byte
		ann   map[string]string
	}{
		{"own shim", args, bootstraptest.Params(t, "c1", ns, grpc, &socketDir), map[string]string{"x": "y"}},
		{"group with no shim", args, bootstraptest.Params(t, "c1", ns, grpc, &socketDir), map[string]string{group.Annotation: "nobody"}},
		{"other namespace", []string{"-namespace", "other", "-address", grpc, "-id", "c1", "start"}, bootstraptest.Params(t, "c1", "other", grpc, &socketDir), hit},
		{"default socket dir", args, bootstraptest.Params(t, "c1", ns, grpc, nil), hit},
		{"params of another container", args, bootstraptest.Params(t, "c2", ns, grpc, &socketDir), hit},
		{"params of another namespace", args, bootstraptest.Params(t, "c1", "other", grpc, &socketDir), hit},
		{"bad params", args, []byte{0xff, 0xff}, hit},
		{"no params", args, nil, hit},
		{"delete action", []string{"-namespace", ns, "-address", grpc, "-id", "c1", "delete"}, bootstraptest.Params(t, "c1", ns, grpc, &socketDir), hit},
		{"version", []string{"-v"}, nil, hit},
		{"info", []string{"-info", "-namespace", ns, "start"}, nil, hit},
		{"unknown flag", append([]string{"-new-flag"}, args...), bootstraptest.Params(t, "c1", ns, grpc, &socketDir), hit},
		{"no namespace", []string{"-address", grpc, "-id", "c1", "start"}, bootstraptest.Params(t, "c1", "", grpc, &socketDir), hit},
		{"extra argument", append(args, "more"), bootstraptest.Params(t, "c1", ns, grpc, &socketDir), hit},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := bundle(t, c.ann)
			if out, ok := answer(c.args, c.input, dir); ok {
				t.Fatalf("answered %x: the shim must", out)
			}
			if _, err := os.Lstat(filepath.Join(dir, "s")); err == nil {
				t.Fatal("the bundle was changed without an answer")
			}
		})
	}
	t.Run("no spec", func(t *testing.T) {
		if _, ok := answer(args, bootstraptest.Params(t, "c1", ns, grpc, &socketDir), t.TempDir()); ok {
			t.Fatal("answered without a config.json")
		}
	})
	t.Run("stale socket", func(t *testing.T) {
		key := "stale"
		a := socketAddress(socketDir, grpc, ns, key)
		sl, err := net.Listen("unix", a[len("unix://"):])
		if err != nil {
			t.Fatal(err)
		}
		sl.(*net.UnixListener).SetUnlinkOnClose(false)
		sl.Close() // the file stays, nothing listens
		if _, ok := answer(args, bootstraptest.Params(t, "c1", ns, grpc, &socketDir), bundle(t, map[string]string{group.Annotation: key})); ok {
			t.Fatal("answered with a dead shim's socket")
		}
	})
	for _, other := range [][]string{{"-namespace", ns, "delete"}, nil, {"start"}} {
		if a, ok := shimargs.Parse(other); ok && IsStart(a) {
			t.Fatalf("%q is a start action", other)
		}
	}
}

// answer is the front's path: parse the command line, then answer.
func answer(args []string, input []byte, dir string) ([]byte, bool) {
	a, ok := shimargs.Parse(args)
	if !ok {
		return nil, false
	}
	return Answer(a, input, dir)
}
