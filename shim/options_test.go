package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

func mustAny(t *testing.T, v any) *anypb.Any {
	t.Helper()
	a, err := typeurl.MarshalAnyToProto(v)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestParseOptions(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "warm.toml")
	if err := os.WriteFile(good, []byte("runc = \"/opt/bin/runc\"\nrunc_root = \"/run/warm\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("rnuc = \"x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("config path", func(t *testing.T) {
		o, err := parseOptions(mustAny(t, &runtimeoptions.Options{ConfigPath: good}))
		if err != nil {
			t.Fatal(err)
		}
		if o.runc.BinaryName != "/opt/bin/runc" || o.runc.Root != "/run/warm" {
			t.Fatalf("got %+v", o.runc)
		}
	})
	t.Run("config body wins over path", func(t *testing.T) {
		o, err := parseOptions(mustAny(t, &runtimeoptions.Options{ConfigPath: good, ConfigBody: []byte("runc = \"/b/runc\"\n")}))
		if err != nil {
			t.Fatal(err)
		}
		if o.runc.BinaryName != "/b/runc" {
			t.Fatalf("got %+v", o.runc)
		}
	})
	t.Run("bad config names the key", func(t *testing.T) {
		_, err := parseOptions(mustAny(t, &runtimeoptions.Options{ConfigPath: bad}))
		if err == nil || !strings.Contains(err.Error(), "unknown key rnuc") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("runc options", func(t *testing.T) {
		o, err := parseOptions(mustAny(t, &options.Options{BinaryName: "/x/runc", SystemdCgroup: true}))
		if err != nil {
			t.Fatal(err)
		}
		if o.runc.BinaryName != "/x/runc" || !o.runc.SystemdCgroup {
			t.Fatalf("got %+v", o.runc)
		}
	})
	t.Run("unsupported type", func(t *testing.T) {
		_, err := parseOptions(mustAny(t, &options.CheckpointOptions{}))
		if err == nil || !strings.Contains(err.Error(), "unsupported type") {
			t.Fatalf("got %v", err)
		}
	})
}
