package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/internal/ksm"
	"github.com/warmshim/warm/internal/procfs"
	"github.com/warmshim/warm/test/benchkit"
)

// KSM is a pool with ksm = true, measured once KSM's scanner merged its sandboxes.
type KSM struct {
	Sandboxes int `json:"sandboxes"`
	// AnonBefore and AnonAfter are the anonymous memory the sandboxes' cgroups are
	// charged, before KSM's scanner runs and once it merged all it would (a merged page is
	// charged once, to one of them).
	AnonBefore int64 `json:"anon_before_bytes"`
	AnonAfter  int64 `json:"anon_after_bytes"`
	// Merged is warmctl's MERGED once settled.
	Merged int64 `json:"merged_bytes"`
	// MergeTime is from starting the scanner to the merge settling (two full scans with
	// nothing more merged), KsmdCPU the scanner's CPU time meanwhile.
	MergeTime time.Duration `json:"merge_time_ns"`
	KsmdCPU   time.Duration `json:"ksmd_cpu_ns"`
	// Scan is the scanner's setting: pages per wake-up, and the sleep between.
	Scan string `json:"scan"`
}

// ksmScan is the scanner's setting for the bench: 5000 pages every 20 ms (about 1 GB/s
// at most; the kernel's default is 100 pages), so that a pool merges in seconds.
var ksmScan = [][2]string{{"pages_to_scan", "5000"}, {"sleep_millisecs", "20"}}

// ksmUnavailable says why KSM cannot be measured here ("" when it can).
func ksmUnavailable() string {
	if why := ksm.Unavailable(); why != "" {
		return why
	}
	if err := unix.Access(filepath.Join(ksm.Dir, "run"), unix.W_OK); err != nil {
		return fmt.Sprintf("%s/run cannot be written: %v", ksm.Dir, err)
	}
	return ""
}

// ksmdCPU is the CPU time of the kernel's ksmd thread.
func ksmdCPU() time.Duration {
	dirs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, d := range dirs {
		if comm, err := os.ReadFile(d); err == nil && strings.TrimSpace(string(comm)) == "ksmd" {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
			if st, err := procfs.ReadStat(pid); err == nil {
				return time.Duration(st.Utime+st.Stime) * 10 * time.Millisecond
			}
		}
	}
	return 0
}

// sandboxAnon sums the anonymous memory charged to the cgroups of the template's pooled
// sandboxes (cgroup v1 memory.stat total_rss, v2 anon).
func sandboxAnon(ns, tmpl string) (int64, error) {
	var dirs []string
	for _, pattern := range []string{"/sys/fs/cgroup/memory/*/warm-%s-%s-*", "/sys/fs/cgroup/*/warm-%s-%s-*"} {
		m, _ := filepath.Glob(fmt.Sprintf(pattern, ns, tmpl))
		dirs = append(dirs, m...)
	}
	if len(dirs) == 0 {
		return 0, fmt.Errorf("no cgroup of a sandbox of %s", tmpl)
	}
	var total int64
	for _, d := range dirs {
		f, err := os.Open(filepath.Join(d, "memory.stat"))
		if err != nil {
			continue // not the memory controller's
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), " ")
			if k == "total_rss" || k == "anon" {
				n, _ := strconv.ParseInt(v, 10, 64)
				total += n
			}
		}
		f.Close()
	}
	return total, nil
}

// measureKSM fills a pool of app with ksm = true (benchkit.PoolConfig's
// [pools.bench-APP-ksm]) with n sandboxes, starts KSM's scanner and waits for the merge
// to settle, then runs hits through one Go client, each on a settled pool whose new
// sandbox had two full scans to merge, interleaved with as many from a pool without ksm
// in the same state. KSM's settings are put back after.
func measureKSM(e *benchkit.Env, app benchkit.App, n, runs int, progress func(string, ...any)) (KSM, []benchkit.Row, error) {
	tmpl, plain := "bench-"+app.Name+"-ksm", "bench-"+app.Name+"-noksm"
	progress("%s: ksm = true, a pool of %d merged by KSM, then %d hits each from it and from a pool without ksm", app.Name, n, runs)
	// The scanner stays off until the pool is full: the memory before is all private.
	restore, err := ksm.Set(append(append([][2]string{}, ksmScan...), [2]string{"run", "0"})...)
	if err != nil {
		return KSM{}, nil, err
	}
	defer restore()
	for _, t := range []string{tmpl, plain} {
		if err := e.MakeTemplate(app, t); err != nil {
			return KSM{}, nil, err
		}
		e.RemoveMaker(t)
		defer func() { _ = e.Ctl.Do("POST", "/pools/"+t+"/drain", nil) }()
	}
	if err := e.Ctl.Do("POST", fmt.Sprintf("/pools/%s/prewarm?n=%d", tmpl, n), nil); err != nil {
		return KSM{}, nil, err
	}
	if err := e.WaitFrozen(tmpl, n); err != nil {
		return KSM{}, nil, err
	}
	if err := e.WaitSettled(tmpl); err != nil {
		return KSM{}, nil, err
	}
	k := KSM{Sandboxes: n, Scan: fmt.Sprintf("pages_to_scan %s, sleep_millisecs %s", ksmScan[0][1], ksmScan[1][1])}
	if k.AnonBefore, err = sandboxAnon(e.CD.Namespace, tmpl); err != nil {
		return KSM{}, nil, err
	}
	cpu0, start := ksmdCPU(), time.Now()
	if err := os.WriteFile(filepath.Join(ksm.Dir, "run"), []byte("1"), 0); err != nil {
		return KSM{}, nil, err
	}
	settle := func() (int64, error) {
		var last int64 = -1
		lastScan := ksm.FullScans()
		for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			st, _, err := e.Ctl.Pool(tmpl)
			if err != nil {
				return 0, err
			}
			switch scans := ksm.FullScans(); {
			case st.Merged != last:
				last, lastScan = st.Merged, scans
			case st.Merged > 0 && scans >= lastScan+2:
				return st.Merged, nil
			}
		}
		return 0, errors.New("KSM's merge never settled")
	}
	if k.Merged, err = settle(); err != nil {
		return KSM{}, nil, err
	}
	k.MergeTime, k.KsmdCPU = time.Since(start), ksmdCPU()-cpu0
	if k.AnonAfter, err = sandboxAnon(e.CD.Namespace, tmpl); err != nil {
		return KSM{}, nil, err
	}
	// Hits: each from a settled pool whose sandboxes merged.
	var merged, unmerged []float64
	for i := 0; i < runs; i++ {
		for _, t := range []string{tmpl, plain} {
			if err := e.WaitSettled(t); err != nil {
				return KSM{}, nil, err
			}
		}
		if _, err := settle(); err != nil {
			return KSM{}, nil, err
		}
		d, err := e.ClientFirstReply(app, map[string]string{"io.containerd.warm.template": plain})
		if err != nil {
			return KSM{}, nil, err
		}
		unmerged = append(unmerged, ms(d))
		if d, err = e.ClientFirstReply(app, map[string]string{"io.containerd.warm.template": tmpl}); err != nil {
			return KSM{}, nil, err
		}
		merged = append(merged, ms(d))
	}
	return k, []benchkit.Row{
		benchkit.Summarize(app.Name, "warm pool hit, settled (Go client)", unmerged),
		benchkit.Summarize(app.Name, "warm pool hit, settled, ksm (Go client)", merged),
	}, nil
}
