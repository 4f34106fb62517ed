// Command bench (`make bench`) measures, on one machine in one run, on an isolated
// containerd: `ctr run --rm busybox true` through runc and through warm (the cold path)
// and ten at once through runc (a reference for the concurrent targets),
// and for the sample Go and Python services the time from `ctr run` to the first reply:
// runc cold, containerd's native restore (what `ctr c checkpoint --task` / `ctr c
// restore --live` do), warm restore-on-create, a warm pool hit, and 10 concurrent hits.
// It prints median, p90 and p99 and the pool's memory, checks the targets, and writes
// everything as JSON.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/warmshim/warm/pool"
	"github.com/warmshim/warm/test/benchkit"
	"github.com/warmshim/warm/test/harness"
)

// Report is the JSON file.
type Report struct {
	When    time.Time             `json:"when"`
	Host    string                `json:"host"`
	Command string                `json:"command"`
	Runs    int                   `json:"runs_per_row"`
	Rows    []benchkit.Row        `json:"rows"`
	Pools   map[string]pool.Stats `json:"pools"`
	Targets []Target              `json:"targets"`
	// Settled is the shim-side Create+Start of hits on a settled pool (no refill running
	// beside them), by app.
	Settled map[string]Serve `json:"settled"`
	// Concurrency is the CPU cost of the 10 concurrent hits, by "app/ctr" and "app/client".
	Concurrency map[string]ConcCPU `json:"concurrency"`
	// KSM is a pool with ksm = true once merged, by app (-ksm).
	KSM   map[string]KSM         `json:"ksm,omitempty"`
	Extra map[string]interface{} `json:"extra,omitempty"`
}

// Serve is the shim's own Create+Start time of pool hits.
type Serve struct {
	Runs int           `json:"runs"`
	P50  time.Duration `json:"serve_p50_ns"`
	P99  time.Duration `json:"serve_p99_ns"`
}

// ConcCPU is what ten hits started at once cost the host's CPU up to the last reply
// (medians over the rounds): on a host whose cores are busy all along, the last reply
// cannot come before Floor, however the work is scheduled.
type ConcCPU struct {
	Cores int `json:"cores"`
	// CPUPerHit is the cores' busy time from a round's start to its last reply, over 10
	// (everything the host ran meanwhile: ctr, containerd, the shims, the applications,
	// the kernel's work).
	CPUPerHit float64 `json:"cpu_per_hit_ms"`
	// Busy is that time over cores x the time to the last reply, in percent.
	Busy float64 `json:"busy_pct"`
	// Ctr is one ctr process's own CPU time for its whole run (its --rm delete too).
	Ctr float64 `json:"ctr_cpu_ms,omitempty"`
	// Floor is 10 x CPUPerHit / Cores.
	Floor float64 `json:"floor_ms"`
}

// Target is one goal of the issue and whether this run met it.
type Target struct {
	What string `json:"what"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

func main() {
	runs := flag.Int("runs", 20, "runs per row (at least 20)")
	out := flag.String("out", "out/bench.json", "JSON file to write")
	apps := flag.String("apps", "go,python", "sample applications to measure")
	withRecovery := flag.Bool("recovery", true, "measure crash recovery too")
	withKSM := flag.Bool("ksm", true, "measure a pool with ksm = true too (turns KSM's scanner on for it, and puts its settings back)")
	debugLog := flag.String("debug-log", "", "run the shims at debug level and copy the pool shim's log (each hit's phases) to this file; debug logging costs time of its own")
	flag.Parse()
	if *runs < 20 {
		fmt.Fprintln(os.Stderr, "bench: -runs must be at least 20")
		os.Exit(2)
	}
	if err := run(*runs, *out, strings.Split(*apps, ","), *withRecovery, *withKSM, *debugLog); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(runs int, outPath string, which []string, withRecovery, withKSM bool, debugLog string) error {
	const ns = "warmbench"
	harness.WarmLogLevel = "info" // as runc's shim; the recovery rows read info lines
	if debugLog != "" {
		harness.WarmLogLevel = "debug"
	}
	e, stop, err := benchkit.Start("warm-bench", ns)
	if err != nil {
		return err
	}
	defer stop()
	if debugLog != "" {
		defer func() {
			// Before stop removes it.
			if data, err := os.ReadFile(filepath.Join(e.CD.WarmRun, ns, "pool-shim.log")); err == nil {
				_ = os.WriteFile(debugLog, data, 0o600)
			}
		}()
	}
	cd := e.CD
	rep := Report{When: time.Now().UTC(), Command: "make bench", Runs: runs, Pools: map[string]pool.Stats{}, Settled: map[string]Serve{}, Concurrency: map[string]ConcCPU{}, KSM: map[string]KSM{}}
	ksmNot := "" // why the KSM rows were not measured
	rep.Host, _ = os.Hostname()

	files, err := harness.BusyboxFiles()
	if err != nil {
		return err
	}
	const busybox = "docker.io/warmbench/busybox:1"
	if err := e.Import(busybox, files); err != nil {
		return err
	}
	goApp, pyApp, appFiles, err := benchkit.Apps(cd.Dir)
	if err != nil {
		return err
	}
	for _, a := range []benchkit.App{goApp, pyApp} {
		if err := e.Import(a.Image, appFiles[a.Name]); err != nil {
			return err
		}
	}
	progress := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }

	// The floor and the cold path, interleaved so both see the same machine.
	progress("busybox true, runc and warm, %d runs each", runs)
	floor := map[string][]float64{}
	for i := -1; i < runs; i++ {
		for _, rt := range []string{harness.Runc, harness.Warm} {
			d, err := e.CtrTrue(cd.RuntimeFlags(rt), busybox)
			if err != nil {
				return err
			}
			if i >= 0 { // the first round warms caches
				floor[rt] = append(floor[rt], ms(d))
			}
		}
	}
	rep.Rows = append(rep.Rows, benchkit.Summarize("busybox true", "runc (floor)", floor[harness.Runc]),
		benchkit.Summarize("busybox true", "warm, cold path", floor[harness.Warm]))
	// For reference, how this machine's containerd scales without warm: ten `ctr run --rm
	// busybox true` through runc at once, twice (20 samples), against the floor's p99.
	progress("busybox true, runc, 10 concurrent, x2")
	var floorConc []float64
	for round := 0; round < 2; round++ {
		s, err := concurrently(10, func() (time.Duration, error) { return e.CtrTrue(cd.RuntimeFlags(harness.Runc), busybox) })
		if err != nil {
			return err
		}
		floorConc = append(floorConc, s...)
	}
	rep.Rows = append(rep.Rows, benchkit.Summarize("busybox true", "runc, 10 concurrent", floorConc))

	byName := map[string]benchkit.App{"go": goApp, "python": pyApp}
	for _, name := range which {
		if strings.TrimSpace(name) == "" {
			continue
		}
		app, ok := byName[strings.TrimSpace(name)]
		if !ok {
			return fmt.Errorf("unknown app %q", name)
		}
		rows, st, conc, err := measureApp(e, app, runs, progress)
		if err != nil {
			return fmt.Errorf("%s: %w", app.Name, err)
		}
		if rep.Settled[app.Name], err = settledHits(e, app, runs, progress); err != nil {
			return fmt.Errorf("%s: settled hits: %w", app.Name, err)
		}
		rep.Rows = append(rep.Rows, rows...)
		rep.Pools[app.Name] = st
		if withKSM {
			if why := ksmUnavailable(); why != "" {
				ksmNot = why
			} else {
				k, rows, err := measureKSM(e, app, 5, runs, progress)
				if err != nil {
					return fmt.Errorf("%s: ksm: %w", app.Name, err)
				}
				rep.KSM[app.Name] = k
				rep.Rows = append(rep.Rows, rows...)
			}
		}
		for via, c := range conc {
			rep.Concurrency[app.Name+"/"+via] = c
		}
	}
	// Crash recovery: a small process (busybox sh answering lines) and the 200 MB Go
	// service, killed with SIGKILL from outside, then asked a question: the time to the
	// answer is the time to serving again.
	echo := benchkit.App{Name: "busybox-echo", Image: busybox, Args: []string{"sh", "-c", "while read l; do echo \"reply $l\"; done"}}
	recApps := []benchkit.App{echo, goApp}
	if !withRecovery {
		recApps = nil
	}
	// runs kills of one recovered container, by restore or from a standby.
	killSeries := func(app benchkit.App, standby bool) ([]float64, error) {
		killAndAsk, stop, err := e.RecoveryContainer(app, "1s", standby)
		if err != nil {
			return nil, err
		}
		defer stop()
		var s []float64
		for i := 0; i < runs; i++ {
			d, err := killAndAsk()
			if err != nil {
				return nil, err
			}
			s = append(s, ms(d))
		}
		return s, nil
	}
	for _, app := range recApps {
		progress("%s: kill -9 and recovery, %d runs", app.Name, runs)
		s, err := killSeries(app, false)
		if err != nil {
			return fmt.Errorf("recovery %s: %w", app.Name, err)
		}
		rep.Rows = append(rep.Rows, benchkit.Summarize(app.Name, "kill -9 to serving again", s))
		// The same with a recovery standby (io.containerd.warm.recovery-standby=on).
		progress("%s: kill -9 and recovery from a standby, %d runs", app.Name, runs)
		if s, err = killSeries(benchkit.App{Name: "sb-" + app.Name, Image: app.Image, Args: app.Args}, true); err != nil {
			return fmt.Errorf("recovery %s (standby): %w", app.Name, err)
		}
		fromStandby, all := e.StandbyRecoveries("recsb-" + app.Name)
		rep.Rows = append(rep.Rows, benchkit.Summarize(app.Name, fmt.Sprintf("kill -9 to serving again, standby (%d/%d adopted)", fromStandby, all), s))
		// The task's pause per periodic checkpoint: a container left running with
		// checkpoints every 300ms until 20 were taken.
		progress("%s: periodic checkpoints, %d", app.Name, runs)
		_, stopP, err := e.RecoveryContainer(app, "300ms", false)
		if err != nil {
			return fmt.Errorf("checkpoints %s: %w", app.Name, err)
		}
		for i := 0; i < 1200; i++ {
			if _, p, _ := e.RecoveryLog("rec" + app.Name); len(p) >= runs+1 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		stopP()
		det, pauses, calls := e.RecoveryLog("rec" + app.Name)
		rep.Rows = append(rep.Rows, benchkit.Summarize(app.Name, "recovery detection (exit to start)", det))
		rep.Rows = append(rep.Rows, benchkit.Summarize(app.Name, "task paused per periodic checkpoint (shim freeze to thaw, full dumps)", pauses))
		rep.Rows = append(rep.Rows, benchkit.Summarize(app.Name, "periodic checkpoint, whole runc call", calls))
	}
	rep.Extra = map[string]interface{}{"incremental_checkpoints": "not measured: CRIU 4.1.1 reports MemTrack (soft-dirty tracking) missing on this kernel, so pre-dumps are refused and every periodic checkpoint is a full dump"}
	if ksmNot != "" {
		rep.Extra["ksm"] = "not measured: " + ksmNot
		fmt.Println("ksm:", rep.Extra["ksm"])
	}
	rep.Targets = targets(rep)
	if r := concurrencyReference(rep); r != "" {
		rep.Extra["concurrency_reference"] = r
	}
	printReport(rep)
	fmt.Println("incremental checkpoints:", rep.Extra["incremental_checkpoints"])
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

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func measureApp(e *benchkit.Env, app benchkit.App, runs int, progress func(string, ...any)) ([]benchkit.Row, pool.Stats, map[string]ConcCPU, error) {
	var rows []benchkit.Row
	tmpl := "bench-" + app.Name
	series := func(mode string, f func() (time.Duration, error)) error {
		progress("%s: %s, %d runs", app.Name, mode, runs)
		var s []float64
		for i := 0; i < runs; i++ {
			d, err := f()
			if err != nil {
				return err
			}
			s = append(s, ms(d))
		}
		rows = append(rows, benchkit.Summarize(app.Name, mode, s))
		return nil
	}
	runcFlags := e.CD.RuntimeFlags(harness.Runc)
	warmFlags := append([]string{"--annotation", "io.containerd.warm.template=" + tmpl}, e.CD.RuntimeFlags(harness.Warm)...)

	if err := series("runc cold", func() (time.Duration, error) { return e.CtrFirstReply(runcFlags, app) }); err != nil {
		return nil, pool.Stats{}, nil, err
	}
	ref := "warmbench/checkpoint:" + app.Name
	progress("%s: native checkpoint", app.Name)
	if err := e.NativeCheckpoint(app, ref); err != nil {
		return nil, pool.Stats{}, nil, err
	}
	defer e.DeleteImage(ref)
	if err := series("containerd native restore (runc)", func() (time.Duration, error) { return e.NativeRestoreFirstReply(app, ref) }); err != nil {
		return nil, pool.Stats{}, nil, err
	}
	progress("%s: making template %s", app.Name, tmpl)
	if err := e.MakeTemplate(app, tmpl); err != nil {
		return nil, pool.Stats{}, nil, err
	}
	e.RemoveMaker(tmpl)
	if err := series("warm pool hit", func() (time.Duration, error) {
		if err := e.WaitFrozen(tmpl, 1); err != nil {
			return 0, err
		}
		return e.CtrFirstReply(warmFlags, app)
	}); err != nil {
		return nil, pool.Stats{}, nil, err
	}
	hitAnn := map[string]string{"io.containerd.warm.template": tmpl}
	if err := series("warm pool hit (Go client)", func() (time.Duration, error) {
		if err := e.WaitFrozen(tmpl, 1); err != nil {
			return 0, err
		}
		return e.ClientFirstReply(app, hitAnn)
	}); err != nil {
		return nil, pool.Stats{}, nil, err
	}
	// The same hits through ctr, each once the pool has refilled (a sandbox frozen, no
	// restore running): the rows above meet the refill of the hit before, which on a small
	// machine takes CPU from the hit (CRIU's restore of the service's memory).
	if err := series(settledMode, func() (time.Duration, error) {
		if err := e.WaitSettled(tmpl); err != nil {
			return 0, err
		}
		return e.CtrFirstReply(warmFlags, app)
	}); err != nil {
		return nil, pool.Stats{}, nil, err
	}
	// The shim-side figures of single hits, before the concurrent ones join the ring.
	seq, _, err := e.Ctl.Pool(tmpl)
	if err != nil {
		return nil, pool.Stats{}, nil, err
	}
	// 10 concurrent hits, twice (20 samples): ten ctr processes, then ten goroutines of
	// one Go client (as containerd's CRI plugin drives containerd).
	progress("%s: 10 concurrent hits, x2, ctr and Go client", app.Name)
	var conc, concClient []float64
	var full pool.Stats
	type roundCPU struct{ perHit, busy float64 }
	cpuOf := map[string][]roundCPU{}
	var ctrCPU []float64
	var ctrMu sync.Mutex // guards ctrCPU
	for round := 0; round < 4; round++ {
		viaClient := round >= 2
		if err := e.Ctl.Do("POST", "/pools/"+tmpl+"/prewarm?n=10", nil); err != nil {
			return nil, pool.Stats{}, nil, err
		}
		if err := e.WaitFrozen(tmpl, 10); err != nil {
			return nil, pool.Stats{}, nil, err
		}
		if round == 0 {
			// The pool's memory, full (the hits empty it).
			if full, _, err = e.Ctl.Pool(tmpl); err != nil {
				return nil, pool.Stats{}, nil, err
			}
		}
		sampler := benchkit.StartBusySampler()
		start := time.Now()
		s, err := concurrently(10, func() (time.Duration, error) {
			if viaClient {
				return e.ClientFirstReply(app, hitAnn)
			}
			d, c, err := e.CtrFirstReplyCPU(warmFlags, app)
			ctrMu.Lock()
			ctrCPU = append(ctrCPU, ms(c))
			ctrMu.Unlock()
			return d, err
		})
		serr := sampler.Stop()
		if err != nil {
			return nil, pool.Stats{}, nil, err
		}
		if serr != nil {
			return nil, pool.Stats{}, nil, serr
		}
		toLast := time.Duration(slices.Max(s) * float64(time.Millisecond))
		busy := sampler.Between(start.Add(toLast))
		via := "ctr"
		if viaClient {
			via = "client"
		}
		cpuOf[via] = append(cpuOf[via], roundCPU{perHit: ms(busy) / 10, busy: 100 * float64(busy) / float64(time.Duration(runtime.NumCPU())*toLast)})
		if viaClient {
			concClient = append(concClient, s...)
		} else {
			conc = append(conc, s...)
		}
	}
	rows = append(rows, benchkit.Summarize(app.Name, "warm 10 concurrent hits", conc),
		benchkit.Summarize(app.Name, "warm 10 concurrent hits (Go client)", concClient))
	st, _, err := e.Ctl.Pool(tmpl)
	if err != nil {
		return nil, pool.Stats{}, nil, err
	}
	concCPU := map[string]ConcCPU{}
	for via, rs := range cpuOf {
		var per, busy []float64
		for _, r := range rs {
			per, busy = append(per, r.perHit), append(busy, r.busy)
		}
		median := func(s []float64) float64 { return benchkit.Summarize("", "", s).Median }
		c := ConcCPU{Cores: runtime.NumCPU(), CPUPerHit: median(per), Busy: median(busy)}
		c.Floor = 10 * c.CPUPerHit / float64(c.Cores)
		if via == "ctr" {
			c.Ctr = median(ctrCPU)
		}
		concCPU[via] = c
	}
	st.ServeP50, st.ServeP99 = seq.ServeP50, seq.ServeP99
	st.Frozen, st.Memory = full.Frozen, full.Memory
	// With the pool drained and acquire_timeout 0, every Create restores on create.
	if err := e.Ctl.Do("POST", "/pools/"+tmpl+"/drain", nil); err != nil {
		return nil, pool.Stats{}, nil, err
	}
	if err := series("warm restore-on-create", func() (time.Duration, error) { return e.CtrFirstReply(warmFlags, app) }); err != nil {
		return nil, pool.Stats{}, nil, err
	}
	// Reorder: cold, native, restore-on-create, hit, concurrent.
	sort.SliceStable(rows, func(i, j int) bool { return order(rows[i].Mode) < order(rows[j].Mode) })
	return rows, st, concCPU, nil
}

// settledHits serves runs hits through one Go client from the pool of a second template
// of app, each once no refill runs (the sequential rows meet the refill of the hit before),
// and returns the shim-side Create+Start of those hits. The pool is drained after.
func settledHits(e *benchkit.Env, app benchkit.App, runs int, progress func(string, ...any)) (Serve, error) {
	tmpl := "bench-" + app.Name + "-settled"
	progress("%s: %d hits on a settled pool (template %s)", app.Name, runs, tmpl)
	if err := e.MakeTemplate(app, tmpl); err != nil {
		return Serve{}, err
	}
	e.RemoveMaker(tmpl)
	defer func() { _ = e.Ctl.Do("POST", "/pools/"+tmpl+"/drain", nil) }()
	ann := map[string]string{"io.containerd.warm.template": tmpl}
	for i := 0; i < runs; i++ {
		if err := e.WaitSettled(tmpl); err != nil {
			return Serve{}, err
		}
		if _, err := e.ClientFirstReply(app, ann); err != nil {
			return Serve{}, err
		}
	}
	st, _, err := e.Ctl.Pool(tmpl)
	if err != nil {
		return Serve{}, err
	}
	if st.Hits != runs {
		return Serve{}, fmt.Errorf("pool %s: %d hits of %d (misses %v)", tmpl, st.Hits, runs, st.Misses)
	}
	return Serve{Runs: runs, P50: st.ServeP50, P99: st.ServeP99}, nil
}

// concurrently runs f n times at once and returns the durations in milliseconds, or
// the first error.
func concurrently(n int, f func() (time.Duration, error)) ([]float64, error) {
	var mu sync.Mutex // guards s and firstErr
	var s []float64
	var firstErr error
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := f()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			s = append(s, ms(d))
		}()
	}
	wg.Wait()
	return s, firstErr
}

func order(mode string) int {
	for i, m := range []string{"runc cold", "containerd native restore (runc)", "warm restore-on-create", "warm pool hit", settledMode, "warm 10 concurrent hits", "warm pool hit (Go client)", "warm 10 concurrent hits (Go client)"} {
		if m == mode {
			return i
		}
	}
	return 99
}

// settledMode is the row of hits through ctr, each on a pool with no refill running.
const settledMode = "warm pool hit, settled pool"

func find(rep Report, app, mode string) *benchkit.Row {
	for i := range rep.Rows {
		if rep.Rows[i].App == app && rep.Rows[i].Mode == mode {
			return &rep.Rows[i]
		}
	}
	return nil
}

func targets(rep Report) []Target {
	var ts []Target
	add := func(what string, got string, met bool) { ts = append(ts, Target{What: what, Got: got, Met: met}) }
	floorRunc, floorWarm := find(rep, "busybox true", "runc (floor)"), find(rep, "busybox true", "warm, cold path")
	if floorRunc != nil && floorWarm != nil {
		r := floorWarm.Median / floorRunc.Median
		add("cold path: warm within 10% of runc (busybox true, median)", fmt.Sprintf("%.2fx", r), r <= 1.10)
	}
	for _, app := range []string{"go", "python"} {
		hit, cold, native, conc := find(rep, app, "warm pool hit"), find(rep, app, "runc cold"), find(rep, app, "containerd native restore (runc)"), find(rep, app, "warm 10 concurrent hits")
		if hit == nil {
			continue
		}
		if st, ok := rep.Pools[app]; ok && st.ServeP99 > 0 {
			add(app+": hit, shim side Create+Start p99 < 10ms (sequential hits)", st.ServeP99.Round(time.Microsecond).String(), st.ServeP99 < 10*time.Millisecond)
		}
		if st, ok := rep.Settled[app]; ok && st.P99 > 0 {
			add(app+": hit, shim side Create+Start p99 < 10ms (settled pool)", st.P99.Round(time.Microsecond).String(), st.P99 < 10*time.Millisecond)
		}
		if floorRunc != nil {
			add(app+": hit end to end median <= runc busybox true median", fmt.Sprintf("%.1fms vs %.1fms", hit.Median, floorRunc.Median), hit.Median <= floorRunc.Median)
		}
		if cold != nil && app == "go" {
			add(app+": hit >= 10x faster than runc cold (median)", fmt.Sprintf("%.1fx", cold.Median/hit.Median), cold.Median/hit.Median >= 10)
			if st := find(rep, app, settledMode); st != nil {
				add(app+": hit >= 10x faster than runc cold (median, settled pool)", fmt.Sprintf("%.1fx", cold.Median/st.Median), cold.Median/st.Median >= 10)
			}
		}
		if native != nil && app == "go" {
			add(app+": hit >= 3x faster than containerd native restore (median)", fmt.Sprintf("%.1fx", native.Median/hit.Median), native.Median/hit.Median >= 3)
		}
		if conc != nil {
			add(app+": 10 concurrent hits p99 within 2x of one hit's p99 (ctr processes)", fmt.Sprintf("%.1fms vs %.1fms", conc.P99, hit.P99)+floorNote(rep, app+"/ctr", hit.P99), conc.P99 <= 2*hit.P99)
		}
		if hc, cc := find(rep, app, "warm pool hit (Go client)"), find(rep, app, "warm 10 concurrent hits (Go client)"); hc != nil && cc != nil {
			add(app+": 10 concurrent hits p99 within 2x of one hit's p99 (one Go client)", fmt.Sprintf("%.1fms vs %.1fms", cc.P99, hc.P99)+floorNote(rep, app+"/client", hc.P99), cc.P99 <= 2*hc.P99)
		}
	}
	for _, app := range []string{"busybox-echo", "go"} {
		if det := find(rep, app, "recovery detection (exit to start)"); det != nil && det.Runs > 0 {
			add(app+": recovery detection p99 < 10ms", fmt.Sprintf("%.2fms", det.P99), det.P99 < 10)
		}
	}
	if srv := find(rep, "busybox-echo", "kill -9 to serving again"); srv != nil {
		add("small process serving again < 150ms (median), restore", fmt.Sprintf("%.1fms", srv.Median), srv.Median < 150)
	}
	for _, r := range rep.Rows {
		if r.App == "busybox-echo" && strings.HasPrefix(r.Mode, "kill -9 to serving again, standby") {
			add("small process serving again < 150ms (median), standby", fmt.Sprintf("%.1fms", r.Median), r.Median < 150)
		}
	}
	return ts
}

// floorNote says, where the CPU the ten hits needed up to their last reply exceeds what
// the host's cores give in twice one hit's p99, that the target is out of this host's
// reach whatever the latency of each step.
func floorNote(rep Report, key string, oneP99 float64) string {
	c, ok := rep.Concurrency[key]
	if !ok || c.Floor <= 2*oneP99 {
		return ""
	}
	return fmt.Sprintf(" (CPU floor %.0fms on %d cores)", c.Floor, c.Cores)
}

func printReport(rep Report) {
	fmt.Printf("\n%-14s %-34s %5s %10s %10s %10s\n", "app", "mode", "runs", "median", "p90", "p99")
	for _, r := range rep.Rows {
		fmt.Printf("%-14s %-34s %5d %8.1fms %8.1fms %8.1fms\n", r.App, r.Mode, r.Runs, r.Median, r.P90, r.P99)
	}
	fmt.Println()
	for app, st := range rep.Pools {
		per := int64(0)
		if st.Frozen > 0 {
			per = st.Memory / int64(st.Frozen)
		}
		fmt.Printf("pool %-8s frozen %d, memory %.1f MiB (%.1f MiB per sandbox), hit shim-side Create+Start p50 %v p99 %v\n",
			app, st.Frozen, float64(st.Memory)/(1<<20), float64(per)/(1<<20), st.ServeP50.Round(time.Microsecond), st.ServeP99.Round(time.Microsecond))
	}
	for app, st := range rep.Settled {
		fmt.Printf("pool %-8s settled (no refill beside the hit), %d hits: shim-side Create+Start p50 %v p99 %v\n",
			app, st.Runs, st.P50.Round(time.Microsecond), st.P99.Round(time.Microsecond))
	}
	for app, k := range rep.KSM {
		mib := func(b int64) float64 { return float64(b) / (1 << 20) }
		fmt.Printf("pool %-8s ksm = true, %d sandboxes: anonymous memory %.1f MiB (%.1f per sandbox) before KSM, %.1f MiB (%.1f per sandbox) merged; MERGED %.1f MiB; merged in %v, ksmd CPU %v (%s)\n",
			app, k.Sandboxes, mib(k.AnonBefore), mib(k.AnonBefore)/float64(k.Sandboxes), mib(k.AnonAfter), mib(k.AnonAfter)/float64(k.Sandboxes),
			mib(k.Merged), k.MergeTime.Round(time.Millisecond), k.KsmdCPU, k.Scan)
	}
	fmt.Println()
	for _, t := range rep.Targets {
		mark := "MET"
		if !t.Met {
			mark = "NOT MET"
		}
		fmt.Printf("%-8s %-62s %s\n", mark, t.What, t.Got)
	}
	if r := concurrencyReference(rep); r != "" {
		fmt.Println("reference (not a target):", r)
	}
	keys := make([]string, 0, len(rep.Concurrency))
	for k := range rep.Concurrency {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c := rep.Concurrency[k]
		ctr := ""
		if c.Ctr > 0 {
			ctr = fmt.Sprintf(" (each ctr process %.0fms of it, its delete too)", c.Ctr)
		}
		fmt.Printf("10 concurrent hits, %s: %.0fms of CPU per hit to the last reply%s, cores %.0f%% busy; that much work takes %.0fms on %d cores\n",
			k, c.CPUPerHit, ctr, c.Busy, c.Floor, c.Cores)
	}
}

// concurrencyReference says how containerd with runc alone scales on this machine from
// one start to ten at once (busybox true, p99 against p99): the context of the
// concurrent-hit targets.
func concurrencyReference(rep Report) string {
	one, ten := find(rep, "busybox true", "runc (floor)"), find(rep, "busybox true", "runc, 10 concurrent")
	if one == nil || ten == nil || one.P99 == 0 {
		return ""
	}
	return fmt.Sprintf("runc busybox true, 10 concurrent p99 %.1fms vs one p99 %.1fms (%.1fx)", ten.P99, one.P99, ten.P99/one.P99)
}
