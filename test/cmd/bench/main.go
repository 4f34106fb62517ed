// Command bench measures, on one machine in one run, the end-to-end latency of
// `ctr run --rm busybox true` through io.containerd.runc.v2 and io.containerd.warm.v2
// (runs interleaved so both see the same conditions), prints median, p90 and p99, and
// writes the same figures as JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/warmshim/warm/test/harness"
)

const image = "docker.io/warmbench/busybox:1"

// Row is one benchmark's figures in milliseconds.
type Row struct {
	Name    string    `json:"name"`
	Runtime string    `json:"runtime"`
	Runs    int       `json:"runs"`
	Median  float64   `json:"median_ms"`
	P90     float64   `json:"p90_ms"`
	P99     float64   `json:"p99_ms"`
	Samples []float64 `json:"samples_ms"`
}

// Report is what the JSON file holds.
type Report struct {
	When    time.Time `json:"when"`
	Host    string    `json:"host"`
	Command string    `json:"command"`
	Rows    []Row     `json:"rows"`
}

func main() {
	runs := flag.Int("runs", 30, "runs per runtime (at least 20)")
	out := flag.String("out", "out/bench.json", "JSON file to write")
	flag.Parse()
	if *runs < 20 {
		fmt.Fprintln(os.Stderr, "bench: -runs must be at least 20")
		os.Exit(2)
	}
	if err := run(*runs, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(runs int, outPath string) error {
	env, err := harness.FindEnv()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("/tmp", "warm-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cd, err := harness.Start(env, dir, "warmbench")
	if err != nil {
		return err
	}
	defer func() {
		_ = cd.Stop()
		harness.RemoveNamespaceCgroups("warmbench")
	}()
	ctx := cd.Context(context.Background())
	client, err := cd.Client()
	if err != nil {
		return err
	}
	defer client.Close()
	files, err := harness.BusyboxFiles()
	if err != nil {
		return err
	}
	if err := harness.ImportImage(ctx, client, image, files, ocispec.ImageConfig{Env: []string{"PATH=/bin"}}); err != nil {
		return err
	}
	rts := []string{harness.Runc, harness.Warm}
	samples := map[string][]float64{}
	once := func(rt string, i int) (time.Duration, error) {
		id := fmt.Sprintf("b%d-%d", i+1, len(samples[rt]))
		args := append([]string{"run", "--rm"}, cd.RuntimeFlags(rt)...)
		args = append(args, image, id, "true")
		start := time.Now()
		out, err := cd.Ctr(ctx, nil, args...)
		d := time.Since(start)
		if err != nil {
			return 0, fmt.Errorf("%s: %w: %s", rt, err, out)
		}
		return d, nil
	}
	// Warm-up, not counted: first runs pay for page cache and shim binary loading.
	for _, rt := range rts {
		if _, err := once(rt, -1); err != nil {
			return err
		}
	}
	for i := 0; i < runs; i++ {
		for _, rt := range rts {
			d, err := once(rt, i)
			if err != nil {
				return err
			}
			samples[rt] = append(samples[rt], float64(d.Microseconds())/1000)
		}
	}
	host, _ := os.Hostname()
	rep := Report{When: time.Now().UTC(), Host: host, Command: "make bench"}
	fmt.Printf("%-34s %-24s %5s %9s %9s %9s\n", "benchmark", "runtime", "runs", "median", "p90", "p99")
	for _, rt := range rts {
		r := summarize("ctr run --rm busybox true", rt, samples[rt])
		rep.Rows = append(rep.Rows, r)
		fmt.Printf("%-34s %-24s %5d %7.1fms %7.1fms %7.1fms\n", r.Name, r.Runtime, r.Runs, r.Median, r.P90, r.P99)
	}
	ratio := rep.Rows[1].Median / rep.Rows[0].Median
	fmt.Printf("warm/runc median ratio: %.3f (target: within 10%%, i.e. <= 1.10)\n", ratio)
	if err := os.MkdirAll(filepath.Dir(outPath), 0o755); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(outPath, data, 0o644); err != nil {
		return err
	}
	fmt.Printf("figures written to %s\n", outPath)
	return nil
}

func summarize(name, rt string, s []float64) Row {
	sorted := append([]float64(nil), s...)
	sort.Float64s(sorted)
	return Row{Name: name, Runtime: rt, Runs: len(s), Median: pct(sorted, 50), P90: pct(sorted, 90), P99: pct(sorted, 99), Samples: s}
}

// pct is the nearest-rank percentile of sorted samples.
func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int((p/100)*float64(len(sorted))+0.999999) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(sorted) {
		rank = len(sorted) - 1
	}
	return sorted[rank]
}
