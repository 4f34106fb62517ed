// Command criufault prints CRIU_FAULT=130 where this host's hardware breakpoints do not
// fire (internal/hwbreak), and nothing where they do: scripts/cri/run-critest.sh exports
// what it prints before it starts containerd, so that runc's shim's CRIU, like warm's,
// does not wait for a breakpoint forever.
package main

import (
	"fmt"
	"os"

	"github.com/warmshim/warm/internal/hwbreak"
)

func main() {
	r := hwbreak.Apply(hwbreak.TestCacheDir())
	if r.Err != nil {
		fmt.Fprintf(os.Stderr, "criufault: %v; CRIU keeps its default\n", r.Err)
	}
	if r.Set {
		fmt.Printf("%s=%s\n", hwbreak.EnvVar, hwbreak.NoBreakpoints)
	}
}
