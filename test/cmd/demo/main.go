// Command demo starts an isolated containerd (temporary root, never the host's), runs a
// container through warm with ctr and with the Go client, prints what happened, and
// removes everything it made.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/warmshim/warm/test/harness"
)

const image = "docker.io/warmdemo/busybox:1"

func main() {
	keep := flag.Bool("keep", false, "leave the containerd running (prints how to reach it)")
	flag.Parse()
	if err := run(*keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func run(keep bool) error {
	env, err := harness.FindEnv()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("/tmp", "warm-demo-")
	if err != nil {
		return err
	}
	step("starting an isolated containerd in %s", dir)
	cd, err := harness.Start(env, dir, "warmdemo")
	if err != nil {
		return err
	}
	cleanup := func() {
		_ = cd.Stop()
		harness.RemoveNamespaceCgroups("warmdemo")
		if leaks := harness.Leaks(dir, "warmdemo"); len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "left behind: %v\n", leaks)
		}
		os.RemoveAll(dir)
	}
	if !keep {
		defer cleanup()
	}
	ctx, cancel := context.WithTimeout(cd.Context(context.Background()), 5*time.Minute)
	defer cancel()
	client, err := cd.Client()
	if err != nil {
		return err
	}
	defer client.Close()
	step("building a busybox image locally and importing it as %s", image)
	files, err := harness.BusyboxFiles()
	if err != nil {
		return err
	}
	if err := harness.ImportImage(ctx, client, image, files, ocispec.ImageConfig{Env: []string{"PATH=/bin:/sbin"}}); err != nil {
		return err
	}
	args := append([]string{"run", "--rm"}, cd.RuntimeFlags(harness.Warm)...)
	args = append(args, image, "demo1", "sh", "-c", "echo hello from a container run by warm; echo kernel: $(uname -r); echo pid in container: $$")
	step("ctr %s", strings.Join(args, " "))
	start := time.Now()
	out, err := cd.Ctr(ctx, nil, args...)
	fmt.Print(indent(out))
	if err != nil {
		return fmt.Errorf("ctr run: %w", err)
	}
	step("ctr run --rm through io.containerd.warm.v2 took %v end to end", time.Since(start).Round(time.Millisecond))
	if keep {
		fmt.Printf("containerd keeps running: ctr --address %s --namespace warmdemo ...\n", cd.Address)
	}
	step("done")
	return nil
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}
