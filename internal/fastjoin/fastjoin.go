// Package fastjoin answers containerd's start action for a container that joins a shim
// already running (a pool hit, a container of a pod), as containerd's shim library and
// the shim's manager would, without loading them. containerd runs the start action for
// every container; the shim binary's package initialisation alone (protobuf registries,
// gRPC, containerd's API) costs about 3 ms of CPU and of latency each time, and a join
// needs none of it: read the bootstrap parameters, find the group's socket, answer its
// address. Anything else (a new shim, a stale socket, unexpected input) is left to the
// shim itself, which then does exactly what it did before.
package fastjoin

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/warmshim/warm/internal/group"
	"github.com/warmshim/warm/internal/shimargs"
)

// defaultSocketDir is containerd's <state dir>/s, where shim sockets live unless the
// bootstrap parameters name another directory (containerd's defaults.DefaultStateDir).
const defaultSocketDir = "/run/containerd/s"

// IsStart reports whether a is a start action: the only one this package answers, and
// the only one whose stdin the front reads.
func IsStart(a shimargs.Args) bool { return a.Action == "start" && a.Namespace != "" }

// params are the fields of containerd's BootstrapParams a join needs.
type params struct {
	instanceID, namespace, grpcAddress string
	socketDir                          string // empty: not set
}

// Field numbers of containerd.runtime.bootstrap.v1.BootstrapParams and BootstrapResult.
const (
	paramInstanceID  = 1
	paramNamespace   = 2
	paramGRPCAddress = 6
	paramSocketDir   = 9

	resultVersion  = 1
	resultAddress  = 2
	resultProtocol = 3
)

// parseParams decodes the BootstrapParams protobuf (other fields are skipped, as
// proto.Unmarshal does with fields it does not know).
func parseParams(b []byte) (params, error) {
	var p params
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return p, protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == paramInstanceID || num == paramNamespace || num == paramGRPCAddress || num == paramSocketDir) {
			v, n := protowire.ConsumeString(b)
			if n < 0 {
				return p, protowire.ParseError(n)
			}
			b = b[n:]
			switch num {
			case paramInstanceID:
				p.instanceID = v
			case paramNamespace:
				p.namespace = v
			case paramGRPCAddress:
				p.grpcAddress = v
			case paramSocketDir:
				p.socketDir = v
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return p, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return p, nil
}

// socketAddress is the address of the shim of group key in namespace ns, as
// containerd's shim.CreateSocketAddress makes it.
func socketAddress(socketDir, grpcAddress, ns, key string) string {
	d := sha256.Sum256([]byte(filepath.Join(grpcAddress, ns, key)))
	return fmt.Sprintf("unix://%s/%x", socketDir, d)
}

// result encodes BootstrapResult{version: 3, address, protocol: "ttrpc"}, what the
// shim's manager answers for a join.
func result(address string) []byte {
	var b []byte
	b = protowire.AppendTag(b, resultVersion, protowire.VarintType)
	b = protowire.AppendVarint(b, 3)
	b = protowire.AppendTag(b, resultAddress, protowire.BytesType)
	b = protowire.AppendString(b, address)
	b = protowire.AppendTag(b, resultProtocol, protowire.BytesType)
	b = protowire.AppendString(b, "ttrpc")
	return b
}

// Answer returns the start action's answer if the command line a, the bootstrap
// parameters read from stdin (input) and the bundle directory dir (where containerd
// runs the start action) make it the start action of a container that joins a running
// shim. ok is false, and nothing was changed, in every other case.
func Answer(a shimargs.Args, input []byte, dir string) (out []byte, ok bool) {
	if !IsStart(a) {
		return nil, false
	}
	p, err := parseParams(input)
	// The shim library refuses parameters that disagree with the command line.
	if err != nil || p.instanceID != a.ID || p.namespace != a.Namespace {
		return nil, false
	}
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, false
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if json.Unmarshal(data, &spec) != nil {
		return nil, false
	}
	scoped := group.Scope(spec.Annotations)
	if group.Check(scoped) != nil {
		return nil, false // the shim says what is wrong
	}
	key := group.Key(a.ID, scoped)
	if key == a.ID {
		return nil, false // a shim of its own: the shim starts it
	}
	socketDir := p.socketDir
	if socketDir == "" {
		socketDir = defaultSocketDir
	}
	address := socketAddress(socketDir, p.grpcAddress, a.Namespace, key)
	conn, err := net.DialTimeout("unix", address[len("unix://"):], 100*time.Millisecond)
	if err != nil {
		return nil, false // none serves the group (or a dead one left its socket)
	}
	conn.Close()
	if p.socketDir != "" {
		// As the shim library does first: the bundle's "s" names the socket directory
		// (for the delete action's clean-up).
		link := filepath.Join(dir, "s")
		if _, err := os.Lstat(link); err == nil {
			if os.Remove(link) != nil {
				return nil, false
			}
		}
		if os.Symlink(p.socketDir, link) != nil {
			return nil, false
		}
	}
	return result(address), true
}
