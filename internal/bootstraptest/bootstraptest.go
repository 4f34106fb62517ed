// Package bootstraptest makes containerd's shim bootstrap parameters for tests of the
// fronts that read them.
package bootstraptest

import (
	"testing"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Params is BootstrapParams as containerd marshals them, every field set (socketDir
// only when not nil).
func Params(t testing.TB, id, ns, grpc string, socketDir *string) []byte {
	t.Helper()
	ext, err := anypb.New(&bootapi.BootstrapResult{Address: "an option"})
	if err != nil {
		t.Fatal(err)
	}
	in, err := proto.Marshal(&bootapi.BootstrapParams{
		InstanceID: id, Namespace: ns, LogLevel: bootapi.LogLevel_LOG_LEVEL_DEBUG,
		ContainerdVersion: "v2.4.2", ContainerdTtrpcAddress: grpc + ".ttrpc", ContainerdGrpcAddress: grpc,
		ContainerdBinary: "/usr/bin/containerd", Extensions: []*bootapi.Extension{{Value: ext}}, SocketDir: socketDir,
	})
	if err != nil {
		t.Fatal(err)
	}
	return in
}
