package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warmshim/warm/oci/wrap"
)

// wrappers builds both warm-runc programs: the C one (what `make build` installs where
// a C compiler is) and the Go one (its fallback). Both must speak oci/wrap's protocol.
func wrappers(t *testing.T) map[string]string {
	dir := t.TempDir()
	bins := map[string]string{}
	goBin := filepath.Join(dir, "warm-runc-go")
	if out, err := exec.Command("go", "build", "-o", goBin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	bins["go"] = goBin
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Log("no C compiler (cc): only the Go wrapper is tested")
		return bins
	}
	cBin := filepath.Join(dir, "warm-runc-c")
	if out, err := exec.Command(cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", cBin, "c/warm-runc.c").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	bins["c"] = cBin
	return bins
}

// fakeShim answers every wrapper request with resp and records what it got.
type fakeShim struct {
	sock  string
	resp  wrap.Response
	reqs  chan wrap.Request
	files chan int
}

func newFakeShim(t *testing.T, resp wrap.Response) *fakeShim {
	f := &fakeShim{sock: filepath.Join(t.TempDir(), "adopt.sock"), resp: resp, reqs: make(chan wrap.Request, 8), files: make(chan int, 8)}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: f.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			req, files, err := wrap.ReadRequest(c)
			if err != nil {
				t.Error(err)
			}
			for _, fl := range files {
				fl.Close()
			}
			f.reqs <- req
			f.files <- len(files)
			_ = wrap.Reply(c, f.resp)
			c.Close()
		}
	}()
	return f
}

// fakeRunc is a "real runc" that writes its arguments to a file.
func fakeRunc(t *testing.T) (bin, argsFile string) {
	dir := t.TempDir()
	argsFile = filepath.Join(dir, "args")
	bin = filepath.Join(dir, "runc")
	script := "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" > " + argsFile + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return bin, argsFile
}

func run(bin string, env []string, args ...string) (stderr string, code int) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var eb bytes.Buffer
	cmd.Stderr = &eb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return eb.String(), ee.ExitCode()
	}
	if err != nil {
		return err.Error(), -1
	}
	return eb.String(), 0
}

func TestWrappers(t *testing.T) {
	for name, bin := range wrappers(t) {
		t.Run(name, func(t *testing.T) {
			runc, argsFile := fakeRunc(t)
			id := `c"1\x` // escaped on the wire
			// create, handled: the shim gets the id, the pid file and stdin/out/err.
			shim := newFakeShim(t, wrap.Response{Handled: true})
			env := []string{wrap.EnvSocket + "=" + shim.sock, wrap.EnvRunc + "=" + runc}
			if errOut, code := run(bin, env, "--root", "/r", "--log", "/dev/null", "create", "--bundle", "/b", "--pid-file", "/b/pid", id); code != 0 {
				t.Fatalf("create: exit %d: %s", code, errOut)
			}
			if r := <-shim.reqs; r.Op != "create" || r.ID != id || r.PidFile != "/b/pid" {
				t.Fatalf("create request %+v", r)
			}
			if n := <-shim.files; n != 3 {
				t.Fatalf("create sent %d files, want 3", n)
			}
			if _, err := os.Stat(argsFile); err == nil {
				t.Fatal("a handled create also ran the real runc")
			}
			// start, no stdio sent.
			if errOut, code := run(bin, env, "--root", "/r", "start", "c2"); code != 0 {
				t.Fatalf("start: exit %d: %s", code, errOut)
			}
			if r := <-shim.reqs; r.Op != "start" || r.ID != "c2" || r.PidFile != "" {
				t.Fatalf("start request %+v", r)
			}
			if n := <-shim.files; n != 0 {
				t.Fatalf("start sent %d files", n)
			}

			// An error: exit 1, on stderr and in runc's --log file (JSON).
			bad := newFakeShim(t, wrap.Response{Error: `cgroup "x" busy`})
			logFile := filepath.Join(t.TempDir(), "log.json")
			errOut, code := run(bin, []string{wrap.EnvSocket + "=" + bad.sock, wrap.EnvRunc + "=" + runc},
				"--root", "/r", "--log", logFile, "--log-format", "json", "start", "c3")
			<-bad.reqs
			if code != 1 || !strings.Contains(errOut, `warm: start c3: cgroup "x" busy`) {
				t.Fatalf("error reply: exit %d, stderr %q", code, errOut)
			}
			if data, _ := os.ReadFile(logFile); !strings.Contains(string(data), `"level":"error"`) || !strings.Contains(string(data), `cgroup \"x\" busy`) {
				t.Fatalf("log file %q", data)
			}

			// Not the shim's container: the real runc runs with the same arguments.
			other := newFakeShim(t, wrap.Response{Handled: false})
			if errOut, code := run(bin, []string{wrap.EnvSocket + "=" + other.sock, wrap.EnvRunc + "=" + runc}, "--root", "/r", "kill", "c4", "9"); code != 0 {
				t.Fatalf("kill: exit %d: %s", code, errOut)
			}
			if r := <-other.reqs; r.Op != "kill" || r.ID != "c4" || r.Signal != "9" {
				t.Fatalf("kill request %+v: the id is the argument before the signal", r)
			}
			if data, _ := os.ReadFile(argsFile); string(data) != runc+"\n--root\n/r\nkill\nc4\n9\n" {
				t.Fatalf("real runc got %q", data)
			}
			// kill --all, and a kill with runc's default signal.
			if errOut, code := run(bin, []string{wrap.EnvSocket + "=" + other.sock, wrap.EnvRunc + "=" + runc}, "--root", "/r", "kill", "--all", "c4", "KILL"); code != 0 {
				t.Fatalf("kill --all: exit %d: %s", code, errOut)
			}
			if r := <-other.reqs; r.ID != "c4" || r.Signal != "KILL" {
				t.Fatalf("kill --all request %+v", r)
			}
			if errOut, code := run(bin, []string{wrap.EnvSocket + "=" + other.sock, wrap.EnvRunc + "=" + runc}, "--root", "/r", "kill", "c4"); code != 0 {
				t.Fatalf("kill: exit %d: %s", code, errOut)
			}
			if r := <-other.reqs; r.ID != "c4" || r.Signal != "" {
				t.Fatalf("kill request without a signal %+v", r)
			}
			// Other commands never ask the shim.
			if errOut, code := run(bin, []string{wrap.EnvSocket + "=" + other.sock, wrap.EnvRunc + "=" + runc}, "--root", "/r", "state", "c5"); code != 0 {
				t.Fatalf("state: exit %d: %s", code, errOut)
			}
			select {
			case r := <-other.reqs:
				t.Fatalf("state asked the shim: %+v", r)
			default:
			}
			if data, _ := os.ReadFile(argsFile); !strings.Contains(string(data), "state\nc5") {
				t.Fatalf("real runc got %q", data)
			}
			// An id too long for the C wrapper's request buffer: refused (or, by the Go
			// one, sent whole), never a crash.
			long := newFakeShim(t, wrap.Response{Handled: true})
			if errOut, code := run(bin, []string{wrap.EnvSocket + "=" + long.sock, wrap.EnvRunc + "=" + runc}, "--root", "/r", "kill", strings.Repeat("x", 20000), "9"); code != 0 && code != 1 {
				t.Fatalf("kill with a 20000-byte id: exit %d: %s", code, errOut)
			} else if code == 1 && !strings.Contains(errOut, "request too long") {
				t.Fatalf("kill with a 20000-byte id failed otherwise: %s", errOut)
			}
			// No shim socket reachable: an error, not a silent exec.
			if _, code := run(bin, []string{wrap.EnvSocket + "=/nonexistent/sock", wrap.EnvRunc + "=" + runc}, "--root", "/r", "start", "c6"); code != 1 {
				t.Fatalf("unreachable shim: exit %d", code)
			}
		})
	}
}
