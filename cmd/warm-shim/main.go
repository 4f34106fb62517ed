// Command warm-shim is the warm runtime's containerd shim (io.containerd.warm.v2),
// installed as libexec/warm/containerd-shim-warm-v2: containerd runs the front of the same
// name in its PATH (cmd/containerd-shim-warm-v2), which hands it every invocation but the
// start action of a container joining a running shim.
package main

import (
	"context"
	"os"
	"syscall"

	containerdshim "github.com/containerd/containerd/v2/pkg/shim"

	"github.com/warmshim/warm/internal/childsignals"
	"github.com/warmshim/warm/oci/wrap"
	"github.com/warmshim/warm/shim"
)

func main() {
	// For a container served from the pool this binary is also its runc.
	if wrap.IsInvocation(os.Args) {
		os.Exit(wrap.Main(os.Args))
	}
	// The start action passes the shim its ttrpc listener as fd 3 (and the debug one as
	// fd 4). containerd's shim library serves a dup of each and leaves the originals open
	// without close-on-exec, so every runc and CRIU the shim runs inherited them: a
	// refill's restore still running when the pool shim exited kept its socket
	// connectable, and the next start action joined a shim that was gone (warmctl start
	// then waited for it in vain, and containerd would too).
	shim.CloseInheritedListeners()
	// Started ignoring SIGHUP (`nohup warmctl start`, a containerd that ignores it): runc,
	// CRIU and the containers get it at its default. (containerd's shim library already
	// catches SIGINT and SIGTERM.)
	childsignals.Default(syscall.SIGHUP)
	containerdshim.RunShim(context.Background(), shim.NewManager())
}
