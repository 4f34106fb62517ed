package test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warmshim/warm/test/harness"
)

// nerdctlBridge is the bridge nerdctl's default network gets in this suite, on a subnet
// of its own; the suite removes it at the end.
const (
	nerdctlBridge   = "nerdctl0"
	nerdctlBridgeIP = "10.237.99.1/24"
)

func nerdctl(ctx context.Context, dir string, args ...string) (string, error) {
	base := []string{"--address", cd.Address, "--namespace", cd.Namespace,
		"--data-root", filepath.Join(dir, "data"), "--cni-path", "/usr/lib/cni",
		"--cni-netconfpath", filepath.Join(dir, "net.d"), "--bridge-ip", nerdctlBridgeIP}
	cmd := exec.CommandContext(ctx, cd.Env.Nerdctl, append(base, args...)...)
	cmd.Env = append(os.Environ(), "NERDCTL_TOML="+filepath.Join(dir, "nerdctl.toml"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestNerdctlCNI runs a web server with `nerdctl run --runtime R` on nerdctl's CNI bridge
// and fetches a page from it over the container's address. The CNI set-up happens in
// nerdctl's createRuntime hook, which the runtime must run with the container's state.
func TestNerdctlCNI(t *testing.T) {
	need(t)
	dir := nerdctlDir(t)
	for _, rt := range Runtimes {
		t.Run(rtName(rt), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			name := shortName(t)
			out, err := nerdctl(ctx, dir, "run", "-d", "--name", name, "--runtime", rt, BusyboxRef,
				"httpd", "-f", "-p", "80", "-h", "/var/www")
			if err != nil {
				t.Fatalf("nerdctl run: %v\n%s", err, out)
			}
			t.Cleanup(func() {
				if out, err := nerdctl(context.Background(), dir, "rm", "-f", name); err != nil {
					t.Errorf("nerdctl rm: %v\n%s", err, out)
				}
			})
			ip, err := nerdctl(ctx, dir, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", name)
			ip = strings.TrimSpace(ip)
			if err != nil || !strings.HasPrefix(ip, "10.237.99.") {
				t.Fatalf("container address %q (%v): is it on the bridge?", ip, err)
			}
			body := getPage(t, ip, "/")
			if body != "hello from warm\n" {
				t.Fatalf("page %q", body)
			}
		})
	}
}

// TestNerdctlPooled serves `nerdctl run --runtime io.containerd.warm.v2` from a pool:
// the template is made by nerdctl too, and the pooled sandbox is reached over the CNI
// bridge address nerdctl's createRuntime hook gave it at adoption.
func TestNerdctlPooled(t *testing.T) {
	need(t)
	dir := nerdctlDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	name := "web-" + shortName(t)
	// The server starts listening only after the checkpoint: CRIU 4.1.1 cannot dump an
	// inet socket on this kernel (getsockopt SO_PASSCRED fails with EOPNOTSUPP).
	app := []string{"sh", "-c", "seed=$RANDOM$RANDOM; touch /tmp/ready; sleep 1; echo seed=$seed > /var/www/seed; exec httpd -f -p 80 -h /var/www"}
	run := func(cname string, ready bool) string {
		args := []string{"run", "-d", "--name", cname, "--runtime", harness.Warm, "--annotation", "io.containerd.warm.template=" + name}
		if ready {
			// CRIU cannot dump a CNI veth: the template is made without a network and
			// the served container gets its address from nerdctl's hook at adoption.
			args = append(args, "--net", "none", "--annotation", "io.containerd.warm.ready=file:/tmp/ready")
		}
		out, err := nerdctl(ctx, dir, append(append(args, BusyboxRef), app...)...)
		if err != nil {
			t.Fatalf("nerdctl run: %v\n%s", err, out)
		}
		t.Cleanup(func() {
			if out, err := nerdctl(context.Background(), dir, "rm", "-f", cname); err != nil {
				t.Errorf("nerdctl rm: %v\n%s", err, out)
			}
		})
		ip, err := nerdctl(ctx, dir, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", cname)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(ip)
	}
	run(name+"-maker", true)
	ctl := harness.NewCtl(cd.WarmRun, cd.Namespace)
	waitFor(t, "pool filled", func() bool { s, ok, _ := ctl.Pool(name); return ok && s.Frozen >= 1 })
	ip := run(name+"-served", false)
	st, _, _ := ctl.Pool(name)
	if st.Hits != 1 {
		t.Fatalf("nerdctl container not served from the pool: %+v", st)
	}
	if body := getPage(t, ip, "/index.html"); body != "hello from warm\n" {
		t.Fatalf("page %q", body)
	}
	// The served sandbox continues the template's state: its seed is the template's,
	// which the maker (without a network) also wrote.
	seed := getPage(t, ip, "/seed")
	mseed, err := nerdctl(ctx, dir, "exec", name+"-maker", "cat", "/var/www/seed")
	if err != nil || strings.TrimSpace(mseed) != strings.TrimSpace(seed) {
		t.Fatalf("served seed %q, template's %q (%v)", seed, mseed, err)
	}
}

// nerdctlDir is nerdctl's data and CNI config directory in the suite; the bridge nerdctl
// makes goes at the end of the test.
func nerdctlDir(t *testing.T) string {
	dir := filepath.Join(suiteDir, "nerdctl")
	if err := os.MkdirAll(filepath.Join(dir, "net.d"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", nerdctlBridge).Run() })
	return dir
}

// getPage fetches http://ip/path once the server answers 200 and returns the body.
func getPage(t *testing.T, ip, path string) string {
	t.Helper()
	var body string
	waitFor(t, "page from "+ip, func() bool {
		resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + ip + path)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200
	})
	return body
}
