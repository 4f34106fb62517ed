// Command containerd-shim-warm-v2 is the warm runtime's containerd shim (io.containerd.warm.v2).
package main

import (
	"context"
	"os"

	containerdshim "github.com/containerd/containerd/v2/pkg/shim"

	"github.com/warmshim/warm/oci/wrap"
	"github.com/warmshim/warm/shim"
)

func main() {
	// For a container served from the pool this binary is also its runc.
	if wrap.IsInvocation(os.Args) {
		os.Exit(wrap.Main(os.Args))
	}
	containerdshim.RunShim(context.Background(), shim.NewManager())
}
