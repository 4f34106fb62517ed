// Command demo (`make demo`) shows warm on an isolated containerd (temporary root, never
// the host's): it builds the sample Go service (a second and 200 MB of initialisation)
// into a local image, runs it cold through runc, makes a warm template from it, fills a
// pool, serves the same container from the pool (each time once the pool has refilled),
// and prints the comparison. Everything
// it made is removed at the end.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/warmshim/warm/test/benchkit"
	"github.com/warmshim/warm/test/harness"
)

func main() {
	runs := flag.Int("runs", 5, "runs per mode")
	flag.Parse()
	if err := run(*runs); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func run(runs int) error {
	// containerd and the shims log at info, as on a node (and as the bench measures).
	harness.WarmLogLevel = "info"
	step("starting an isolated containerd under /tmp/warm-demo-*")
	e, stop, err := benchkit.Start("warm-demo", "warmdemo")
	if err != nil {
		return err
	}
	defer stop()
	cd := e.CD
	step("building the sample Go service (1 s and 200 MB of initialisation) into a local image")
	goApp, _, files, err := benchkit.Apps(cd.Dir)
	if err != nil {
		return err
	}
	if err := e.Import(goApp.Image, files["go"]); err != nil {
		return err
	}
	measure := func(label string, flags []string, before func() error) ([]float64, error) {
		var s []float64
		for i := 0; i < runs; i++ {
			if before != nil {
				if err := before(); err != nil {
					return nil, err
				}
			}
			d, err := e.CtrFirstReply(flags, goApp)
			if err != nil {
				return nil, err
			}
			s = append(s, float64(d.Microseconds())/1000)
			fmt.Printf("    %-10s run %d: ctr run -> first reply in %6.1f ms\n", label, i+1, s[len(s)-1])
		}
		return s, nil
	}
	step("cold: ctr run --rm --runtime io.containerd.runc.v2 %s (x%d)", goApp.Image, runs)
	cold, err := measure("runc cold", cd.RuntimeFlags(harness.Runc), nil)
	if err != nil {
		return err
	}
	const tmpl = "demo-go"
	step("making template %s: the service runs through warm with io.containerd.warm.template=%s and io.containerd.warm.ready=file:/tmp/ready;", tmpl, tmpl)
	fmt.Println("    once ready, warm checkpoints it (it keeps running) and restores a pool of frozen sandboxes")
	start := time.Now()
	if err := e.MakeTemplate(goApp, tmpl); err != nil {
		return err
	}
	e.RemoveMaker(tmpl)
	step("template made and pool filled in %v", time.Since(start).Round(time.Millisecond))
	full, _, _ := e.Ctl.Pool(tmpl) // its memory, while the pool is full (the hits empty it)
	warmFlags := append([]string{"--annotation", "io.containerd.warm.template=" + tmpl}, cd.RuntimeFlags(harness.Warm)...)
	step("warm: ctr run --rm --runtime io.containerd.warm.v2 --annotation io.containerd.warm.template=%s %s (x%d)", tmpl, goApp.Image, runs)
	// Each hit takes a sandbox, and the pool restores another in the background (about a
	// second of CRIU work for this service). The demo waits for that refill before the
	// next hit, as containers that start now and then find their pool: on a small machine a
	// refill beside a hit takes CPU from it (make bench measures hits back to back too).
	fmt.Println("    before each run the demo waits until the pool has refilled (a sandbox frozen, no restore running)")
	hits, err := measure("warm hit", warmFlags, func() error { return e.WaitSettled(tmpl) })
	if err != nil {
		return err
	}
	st, _, _ := e.Ctl.Pool(tmpl)
	c, h := benchkit.Summarize("go", "runc cold", cold), benchkit.Summarize("go", "warm pool hit", hits)
	fmt.Println()
	fmt.Printf("%-16s %5s %10s %10s %10s\n", "mode", "runs", "median", "p90", "p99")
	for _, r := range []benchkit.Row{c, h} {
		fmt.Printf("%-16s %5d %8.1fms %8.1fms %8.1fms\n", r.Mode, r.Runs, r.Median, r.P90, r.P99)
	}
	each := 0.0
	if full.Frozen > 0 {
		each = float64(full.Memory) / float64(full.Frozen) / (1 << 20)
	}
	fmt.Printf("\nwarm pool hit is %.1fx faster than a cold start (median); pool before the hits: %d frozen, %.0f MiB (%.0f MiB each); %d hits, shim-side Create+Start p50 %v\n",
		c.Median/h.Median, full.Frozen, float64(full.Memory)/(1<<20), each, st.Hits, st.ServeP50.Round(time.Microsecond))
	fmt.Println(strings.Repeat("-", 60))
	return nil
}
