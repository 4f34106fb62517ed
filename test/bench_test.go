package test

import (
	"fmt"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/warmshim/warm/internal/procfs"
	"github.com/warmshim/warm/test/harness"
)

// BenchmarkPoolHit measures a pool hit: Create+Start of a container served from a
// frozen sandbox of a settled pool (no refill running). It reports the shim's own Create+Start time (p50 and p99, measured
// inside the shim) and the client's NewTask+Start time. Run it with
//
//	sudo make build && PATH=$PWD/bin:/var/cache/warm-tools/bin:$PATH go test -run '^$' -bench PoolHit ./test/
func BenchmarkPoolHit(b *testing.B) {
	e, name, ctl := benchPool(b, "benchhit")
	var client []time.Duration
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		// A settled pool: no refill restore competes with the hit for the CPU (the bench
		// command's rows measure hits back to back and concurrent).
		waitForB(b, func() bool { s, _, _ := ctl.Pool(name); return s.Frozen >= 1 && s.Restoring == 0 })
		client = append(client, poolHitB(b, e, name))
	}
	b.StopTimer()
	st, _, _ := ctl.Pool(name)
	sort.Slice(client, func(i, j int) bool { return client[i] < client[j] })
	b.ReportMetric(float64(st.ServeP50.Microseconds())/1000, "shim-p50-ms")
	b.ReportMetric(float64(st.ServeP99.Microseconds())/1000, "shim-p99-ms")
	if len(client) > 0 {
		b.ReportMetric(float64(client[len(client)/2].Microseconds())/1000, "client-p50-ms")
	}
}

// BenchmarkPoolHitDuringRefill is BenchmarkPoolHit with a refill's restore running: the
// pool is kept at two, and each hit comes 30 ms into the restore that replaces the
// previous hit's sandbox (CRIU and the restored task busy in their cgroup). It reports
// the shim's Create+Start p50 and p99 and how often the refill gate paused restores.
// Compare with BenchmarkPoolHit, and with the gate off (WARM_TEST_REFILL_PAUSE=false):
//
//	sudo make build && PATH=$PWD/bin:/var/cache/warm-tools/bin:$PATH go test -run '^$' -bench PoolHitDuringRefill -benchtime 40x ./test/
func BenchmarkPoolHitDuringRefill(b *testing.B) {
	e, name, ctl := benchPool(b, "benchrefill")
	if err := ctl.Do("POST", "/pools/"+name+"/prewarm?n=2", nil); err != nil {
		b.Fatal(err)
	}
	// A settled pool, then a first hit (not measured) whose refill the loop's first hit meets.
	waitForB(b, func() bool { s, _, _ := ctl.Pool(name); return s.Frozen >= 2 && s.Restoring == 0 })
	b.StopTimer()
	st, _, _ := ctl.Pool(name)
	restored := st.Restored // once the refill of the hit to come is done, more than this
	poolHitB(b, e, name)
	var client []time.Duration
	pauses0, paused0 := refillPauses(b, ctl)
	met := 0 // hits that came while the refill ran
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		// The previous hit's refill (it starts once that hit started, and 100 ms after
		// its acquire). A small restore can end before the pool is looked at: the hit
		// then meets none, and is counted apart.
		var running bool
		waitForB(b, func() bool {
			s, _, _ := ctl.Pool(name)
			running = s.Frozen >= 1 && s.Restoring >= 1
			return running || (s.Frozen >= 1 && s.Restored > restored)
		})
		if running {
			time.Sleep(30 * time.Millisecond)
			if s, _, _ := ctl.Pool(name); s.Restoring >= 1 {
				met++
			}
		}
		st, _, _ := ctl.Pool(name)
		restored = st.Restored + st.Restoring
		client = append(client, poolHitB(b, e, name))
	}
	st, _, _ = ctl.Pool(name)
	pauses, paused := refillPauses(b, ctl)
	sort.Slice(client, func(i, j int) bool { return client[i] < client[j] })
	b.ReportMetric(float64(st.ServeP50.Microseconds())/1000, "shim-p50-ms")
	b.ReportMetric(float64(st.ServeP99.Microseconds())/1000, "shim-p99-ms")
	if len(client) > 0 {
		b.ReportMetric(float64(client[len(client)/2].Microseconds())/1000, "client-p50-ms")
		b.ReportMetric(float64(client[len(client)*99/100].Microseconds())/1000, "client-p99-ms")
	}
	b.ReportMetric(float64(met)/float64(b.N), "refill-met/hit")
	b.ReportMetric(float64(pauses-pauses0)/float64(b.N), "pauses/hit")
	if n := pauses - pauses0; n > 0 {
		b.ReportMetric((paused-paused0).Seconds()*1000/float64(n), "ms/pause")
	}
}

// BenchmarkPoolHitConcurrent compares 10 hits started at once with 10 started one after
// another, each on a pool of 10 settled sandboxes, through one Go client (as the CRI
// plugin drives containerd): NewContainer + NewTask + Start per hit. It reports p50 and
// p99 of both, their ratio, and the shim's share. Run it with
//
//	sudo make build && PATH=$PWD/bin:/var/cache/warm-tools/bin:$PATH go test -run '^$' -bench PoolHitConcurrent -benchtime 3x ./test/
func BenchmarkPoolHitConcurrent(b *testing.B) {
	e, name, ctl := benchPool(b, "benchconc")
	img, err := e.client.GetImage(e.ctx, BusyboxRef)
	if err != nil {
		b.Fatal(err)
	}
	settle := func() {
		if err := ctl.Do("POST", "/pools/"+name+"/prewarm?n=10", nil); err != nil {
			b.Fatal(err)
		}
		waitForB(b, func() bool { s, _, _ := ctl.Pool(name); return s.Frozen >= 10 && s.Restoring == 0 })
	}
	// hit serves one container and returns its NewContainer+NewTask+Start time; the
	// task is removed by the returned cleanup.
	hit := func() (time.Duration, func()) {
		id := fmt.Sprintf("conc-%d", time.Now().UnixNano())
		start := time.Now()
		c, err := e.client.NewContainer(e.ctx, id, containerd.WithImage(img), containerd.WithNewSnapshot(id+"-snap", img),
			e.runtimeOpt(), containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(echoApp...), oci.WithDefaultUnixDevices, templateAnn(name, false)))
		if err != nil {
			b.Error(err)
			return 0, func() {}
		}
		task, err := c.NewTask(e.ctx, cio.NullIO)
		if err == nil {
			err = task.Start(e.ctx)
		}
		d := time.Since(start)
		if err != nil {
			b.Error(err)
		}
		return d, func() {
			if task != nil {
				_, _ = task.Delete(e.ctx, containerd.WithProcessKill)
			}
			_ = c.Delete(e.ctx, containerd.WithSnapshotCleanup)
		}
	}
	var seq, conc []time.Duration
	var cleanups []func()
	// CPU time of the concurrent rounds: containerd, the processes it ran and reaped
	// (the shim's start actions), the pool shim, and this client.
	var cpuCtd, cpuKids, cpuShim, cpuSelf time.Duration
	cpu := func() (ctd, kids, shim, self time.Duration) {
		ctd, kids, _ = procCPU(cd.Pid())
		shim, _, _ = procCPU(poolShimPid(b))
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		return
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		settle()
		for j := 0; j < 10; j++ {
			d, done := hit()
			seq = append(seq, d)
			cleanups = append(cleanups, done)
		}
		for _, f := range cleanups {
			f()
		}
		cleanups = cleanups[:0]
		settle()
		c0, k0, s0, m0 := cpu()
		b.StartTimer()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for j := 0; j < 10; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, done := hit()
				mu.Lock()
				conc = append(conc, d)
				cleanups = append(cleanups, done)
				mu.Unlock()
			}()
		}
		wg.Wait()
		b.StopTimer()
		c1, k1, s1, m1 := cpu()
		cpuCtd, cpuKids, cpuShim, cpuSelf = cpuCtd+c1-c0, cpuKids+k1-k0, cpuShim+s1-s0, cpuSelf+m1-m0
		for _, f := range cleanups {
			f()
		}
		cleanups = cleanups[:0]
		b.StartTimer()
	}
	b.StopTimer()
	pct := func(s []time.Duration, p float64) float64 {
		if len(s) == 0 {
			return 0
		}
		s = append([]time.Duration(nil), s...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		i := int(p*float64(len(s))+0.999999) - 1
		return float64(s[max(0, min(i, len(s)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(seq, 0.5), "one-p50-ms")
	b.ReportMetric(pct(seq, 0.99), "one-p99-ms")
	b.ReportMetric(pct(conc, 0.5), "ten-p50-ms")
	b.ReportMetric(pct(conc, 0.99), "ten-p99-ms")
	if p := pct(seq, 0.99); p > 0 {
		b.ReportMetric(pct(conc, 0.99)/p, "p99-ratio")
	}
	if n := float64(len(conc)); n > 0 {
		b.ReportMetric(float64(cpuCtd.Microseconds())/1000/n, "cpu-containerd-ms/hit")
		b.ReportMetric(float64(cpuKids.Microseconds())/1000/n, "cpu-startaction-ms/hit")
		b.ReportMetric(float64(cpuShim.Microseconds())/1000/n, "cpu-poolshim-ms/hit")
		b.ReportMetric(float64(cpuSelf.Microseconds())/1000/n, "cpu-client-ms/hit")
	}
}

// benchPool skips without the real stack, and otherwise returns the benchmark's env and
// the pool shim's control client, with template name made (once per suite) and pooled.
func benchPool(b *testing.B, name string) (*envB, string, *harness.Ctl) {
	b.Helper()
	if skipWhy != "" {
		b.Skip(skipWhy)
	}
	e := newEnvB(b)
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	if _, ok, _ := ctl.Pool(name); !ok {
		makeTemplateB(b, e, name)
	}
	return e, name, ctl
}

// procCPU is a process's user+system CPU time and its reaped children's, from /proc (in
// clock ticks of 10 ms).
func procCPU(pid int) (own, children time.Duration, err error) {
	st, err := procfs.ReadStat(pid)
	if err != nil {
		return 0, 0, err
	}
	tick := 10 * time.Millisecond
	return time.Duration(st.Utime+st.Stime) * tick, time.Duration(st.Cutime+st.Cstime) * tick, nil
}

// poolHitB serves one container from the pool of template name, timing (and returning)
// its NewTask+Start; the caller stops the timer before. The task is deleted after.
func poolHitB(b *testing.B, e *envB, name string) time.Duration {
	c := e.containerB(echoApp, templateAnn(name, false))
	b.StartTimer()
	start := time.Now()
	task, err := c.NewTask(e.ctx, cio.NullIO)
	if err != nil {
		b.Fatal(err)
	}
	if err := task.Start(e.ctx); err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	b.StopTimer()
	exited, err := task.Wait(e.ctx)
	if err != nil {
		b.Fatal(err)
	}
	_ = task.Kill(e.ctx, syscall.SIGKILL) // it may have ended already (stdin is empty)
	<-exited
	if _, err := task.Delete(e.ctx); err != nil {
		b.Fatal(err)
	}
	return d
}

func refillPauses(b *testing.B, ctl *harness.Ctl) (int64, time.Duration) {
	n, d, err := ctl.RefillPauses()
	if err != nil {
		b.Fatal(err)
	}
	return n, d
}
