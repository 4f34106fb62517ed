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
	dir := filepath.Join(suiteDir, "nerdctl")
	if err := os.MkdirAll(filepath.Join(dir, "net.d"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", nerdctlBridge).Run()
	})
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
			var body string
			waitFor(t, "page from "+ip, func() bool {
				resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + ip + "/")
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				body = string(b)
				return resp.StatusCode == 200
			})
			if body != "hello from warm\n" {
				t.Fatalf("page %q", body)
			}
		})
	}
}
