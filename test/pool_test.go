package test

import (
	"io"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/warmshim/warm/test/harness"
)

// echoApp initialises (a random seed stands for expensive state), says ready, then
// answers each line on stdin with a line carrying the seed: a sandbox restored from the
// template answers with the template's seed, a cold start with a new one.
var echoApp = []string{"sh", "-c", `seed=$RANDOM$RANDOM; n=0; while [ $n -lt 200 ]; do n=$((n+1)); done; touch /tmp/ready; echo ready; while read line; do echo "reply $line seed=$seed"; done`}

func templateAnn(name string, ready bool) oci.SpecOpts {
	a := map[string]string{"io.containerd.warm.template": name}
	if ready {
		a["io.containerd.warm.ready"] = "file:/tmp/ready"
	}
	return oci.WithAnnotations(a)
}

// askSeed sends a line to a running echo task and returns the seed of its reply.
func askSeed(t *testing.T, w io.Writer, out *syncBuffer, line string) string {
	t.Helper()
	if _, err := w.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	var seed string
	waitFor(t, "reply to "+line, func() bool {
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(l, "reply "+line+" seed=") {
				seed = strings.TrimPrefix(l, "reply "+line+" seed=")
				return true
			}
		}
		return false
	})
	return seed
}

// makeTemplate runs a template maker and waits until its pool holds frozen sandboxes.
func makeTemplate(t *testing.T, e *env, name string) (seed string) {
	t.Helper()
	c := e.container(echoApp, templateAnn(name, true))
	r, w := io.Pipe()
	t.Cleanup(func() { w.Close() })
	var out syncBuffer
	e.start(c, streams(r, &out, io.Discard))
	seed = askSeed(t, w, &out, "maker")
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	waitFor(t, "pool of "+name+" filled", func() bool {
		st, ok, err := ctl.Pool(name)
		return err == nil && ok && st.Frozen >= 2
	})
	return seed
}

// TestPoolHit makes a template by annotation and serves a container from its pool: the
// container continues from the template's state, gets only its own output, and every
// task RPC works on it.
func TestPoolHit(t *testing.T) {
	need(t)
	e := newEnv(t, harness.Warm)
	name := "echo-" + shortName(t)
	seed := makeTemplate(t, e, name)

	c := e.container(echoApp, templateAnn(name, false))
	r, w := io.Pipe()
	defer w.Close()
	var out syncBuffer
	task, exit := e.start(c, streams(r, &out, io.Discard))
	if got := askSeed(t, w, &out, "served"); got != seed {
		t.Fatalf("served container has seed %s, the template %s: not restored from the template", got, seed)
	}
	if strings.Contains(out.String(), "ready") {
		t.Fatalf("output from before adoption leaked: %q", out.String())
	}
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	st, _, err := ctl.Pool(name)
	if err != nil || st.Hits != 1 {
		t.Fatalf("pool stats %+v, %v: want one hit", st, err)
	}
	// Every task RPC on an adopted sandbox.
	spec, _ := c.Spec(e.ctx)
	ps := *spec.Process
	ps.Args = []string{"sh", "-c", "echo exec-in-adopted; exit 5"}
	var xo syncBuffer
	p, err := task.Exec(e.ctx, "x1", &ps, streams(nil, &xo, io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	pexit, _ := p.Wait(e.ctx)
	if err := p.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	if code := exitOf(t, pexit); code != 5 {
		t.Fatalf("exec exit %d", code)
	}
	if _, err := p.Delete(e.ctx); err != nil {
		t.Fatal(err)
	}
	if xo.String() != "exec-in-adopted\n" {
		t.Fatalf("exec output %q", xo.String())
	}
	if err := task.Pause(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := task.Resume(e.ctx); err != nil {
		t.Fatal(err)
	}
	if pids, err := task.Pids(e.ctx); err != nil || len(pids) == 0 {
		t.Fatalf("pids %v %v", pids, err)
	}
	if _, err := task.Metrics(e.ctx); err != nil {
		t.Fatalf("metrics: %v", err)
	}
	if got := askSeed(t, w, &out, "after-rpcs"); got != seed {
		t.Fatalf("seed changed: %s", got)
	}
	if err := task.Kill(e.ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := exitOf(t, exit); code != 137 {
		t.Fatalf("exit %d", code)
	}
}
