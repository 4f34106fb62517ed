package test

import (
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/warmshim/warm/test/harness"
)

// BenchmarkPoolHit measures a pool hit: Create+Start of a container served from a
// frozen sandbox of a settled pool (no refill running). It reports the shim's own Create+Start time (p50 and p99, measured
// inside the shim) and the client's NewTask+Start time. Run it with
//
//	sudo make build && PATH=$PWD/bin:/var/cache/warm-tools/bin:$PATH go test -run '^$' -bench PoolHit ./test/
func BenchmarkPoolHit(b *testing.B) {
	if skipWhy != "" {
		b.Skip(skipWhy)
	}
	e := newEnvB(b)
	name := "benchhit"
	if _, ok, _ := harness.NewCtl(cd.WarmRun, cd.Namespace).Pool(name); !ok {
		makeTemplateB(b, e, name)
	}
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	var client []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		// A settled pool: no refill restore competes with the hit for the CPU (the bench
		// command's rows measure hits back to back and concurrent).
		waitForB(b, func() bool { s, _, _ := ctl.Pool(name); return s.Frozen >= 1 && s.Restoring == 0 })
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
		client = append(client, time.Since(start))
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
		b.StartTimer()
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
