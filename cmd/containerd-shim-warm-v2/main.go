// Command containerd-shim-warm-v2 is the warm runtime's containerd shim (io.containerd.warm.v2).
package main

import (
	"context"

	containerdshim "github.com/containerd/containerd/v2/pkg/shim"

	"github.com/warmshim/warm/shim"
)

func main() {
	containerdshim.RunShim(context.Background(), shim.NewManager())
}
