package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/warmshim/warm/internal/ksm"
	"github.com/warmshim/warm/test/harness"

	"github.com/warmshim/warm/internal/testenv"
)

// blobApp is echoApp holding about 8 MiB of random data (pages that are neither zero nor
// shared with anything but the sandboxes restored from the same checkpoint).
var blobApp = []string{"sh", "-c", "blob=$(head -c 6000000 /dev/urandom | base64); " + echoApp[2]}

const blobBytes = 8 << 20

// withArgs sets the container's process args.
func withArgs(args []string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.Args = args
		return nil
	}
}

// TestPoolKSM: a pool with ksm = true restores its sandboxes with the kernel's same-page
// merging on, so once KSM's scanner runs, the pages they all restore from the template
// are merged (warmctl's MERGED), and a container served from one still continues from
// the template's state (and keeps merging on). A pool without it, of the same
// application, has nothing merged after as many scans: merging is the pool's opt-in.
// KSM's scanner is turned on (and fast) for the test and put back as it was after.
func TestPoolKSM(t *testing.T) {
	need(t)
	if why := ksm.Unavailable(); why != "" {
		testenv.Missing(t, "per-process KSM: "+why)
	}
	restore, err := ksm.Set([2]string{"pages_to_scan", "5000"}, [2]string{"sleep_millisecs", "20"}, [2]string{"run", "1"})
	if err != nil {
		t.Fatalf("KSM: %v", err)
	}
	t.Cleanup(restore)
	e := newEnv(t, harness.Warm)
	name, plain := "ksm-"+shortName(t), "noksm-"+shortName(t)
	cfgPath, writeCfg := suiteConfig(t)
	writeCfg(fmt.Sprintf("\n[pools.%s]\nksm = true\n[pools.%s]\nmin = 2\n", name, plain))
	e.warmCfg = cfgPath
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)

	makeTemplate(t, e, plain, withArgs(blobApp))
	seed := makeTemplate(t, e, name, withArgs(blobApp))
	if err := ctl.Do("POST", "/pools/"+name+"/prewarm?n=3", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "3 frozen sandboxes", func() bool { st, _, _ := ctl.Pool(name); return st.Frozen >= 3 })
	// Each of the 3 has its copy of the blob merged with the others'.
	waitForf(t, func() string {
		st, _, _ := ctl.Pool(name)
		return fmt.Sprintf("the sandboxes' blobs merged (%d bytes merged)", st.Merged)
	}, func() bool { st, _, _ := ctl.Pool(name); return st.Merged >= 2*blobBytes })
	scans := ksm.FullScans()
	waitFor(t, "two more full KSM scans", func() bool { return ksm.FullScans() >= scans+2 })
	if st, _, _ := ctl.Pool(plain); st.Frozen < 2 || st.Merged != 0 {
		t.Errorf("pool without ksm: %d frozen, %d bytes merged; want 2 and none", st.Frozen, st.Merged)
	}
	out, err := exec.Command(cd.Env.Warmctl, "--run-dir", cd.WarmRun, "-n", cd.Namespace, "pool", "ls").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "MERGED") {
		t.Errorf("warmctl pool ls: %v\n%s", err, out)
	}

	x := startServed(t, e, name, seed, "hit", withArgs(blobApp))
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/ksm_stat", x.task.Pid()))
	if err != nil || !strings.Contains(string(stat), "ksm_merge_any: yes") {
		t.Errorf("served process's ksm_stat: %v\n%s", err, stat)
	}
	killAndDelete(t, e, x.c, x.task, x.exit)
}
