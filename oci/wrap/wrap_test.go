package wrap

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/internal/ksm"
	"github.com/warmshim/warm/internal/testenv"
)

func TestParse(t *testing.T) {
	cases := []struct {
		args             []string
		sub, id, pidFile string
	}{
		{[]string{"x", "--root", "/r", "--log", "/b/log.json", "--log-format", "json", "create", "--bundle", "/b", "--pid-file", "/b/init.pid", "c1"}, "create", "c1", "/b/init.pid"},
		{[]string{"x", "--root", "/r", "--debug", "--systemd-cgroup", "start", "c2"}, "start", "c2", ""},
		{[]string{"x", "--root", "/r", "kill", "--all", "c3", "9"}, "kill", "c3", ""},
		{[]string{"x", "--root", "/r", "kill", "c4", "15"}, "kill", "c4", ""},
		{[]string{"x", "--root", "/r", "kill", "c5"}, "kill", "c5", ""},
		{[]string{"x", "--root", "/r"}, "", "", ""},
	}
	for _, tc := range cases {
		sub, id, pf := ParseArgs(tc.args)
		if sub != tc.sub || id != tc.id || pf != tc.pidFile {
			t.Errorf("%v: got %q %q %q", tc.args, sub, id, pf)
		}
	}
}

func TestKillSignal(t *testing.T) {
	cases := []struct {
		args   []string
		signal string
	}{
		{[]string{"x", "--root", "/r", "kill", "--all", "c3", "9"}, "9"},
		{[]string{"x", "--root", "/r", "--log-format", "json", "kill", "c4", "15"}, "15"},
		{[]string{"x", "--root", "/r", "kill", "-a", "c5"}, ""},
		{[]string{"x", "--root", "/r", "kill", "c5", "SIGHUP"}, "SIGHUP"},
		{[]string{"x", "--root", "/r", "start", "c6"}, ""},
	}
	for _, tc := range cases {
		if sig := KillSignal(tc.args); sig != tc.signal {
			t.Errorf("%v: got %q", tc.args, sig)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]unix.Signal{"": unix.SIGTERM, "0": 0, "9": unix.SIGKILL, "KILL": unix.SIGKILL, "sigkill": unix.SIGKILL, "SIGHUP": unix.SIGHUP, "usr1": unix.SIGUSR1} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"-1", "65", "NOPE", "SIG"} {
		if got, err := ParseSignal(bad); err == nil {
			t.Errorf("ParseSignal(%q) = %v, want an error", bad, got)
		}
	}
}

func TestLogPath(t *testing.T) {
	if p := logPath([]string{"x", "--root", "/r", "--log", "/b/log.json", "create", "c"}); p != "/b/log.json" {
		t.Fatalf("got %q", p)
	}
	if p := logPath([]string{"x", "--root", "/r", "create", "--log", "/not/global", "c"}); p != "" {
		t.Fatalf("got %q", p)
	}
}

func TestRoot(t *testing.T) {
	if r := Root([]string{"runc", "--log", "/b/log.json", "--root", "/run/r", "restore", "--bundle", "/b", "c"}); r != "/run/r" {
		t.Fatalf("root %q", r)
	}
	if r := Root([]string{"runc", "restore", "--root", "/not/global", "c"}); r != "" {
		t.Fatalf("a subcommand's flag taken for the root: %q", r)
	}
}

func TestIsInvocation(t *testing.T) {
	t.Setenv(EnvRunc, "")
	if IsInvocation([]string{"shim", "--root", "/r"}) {
		t.Fatal("without WARM_RUNC the binary is the shim")
	}
	t.Setenv(EnvRunc, "/usr/bin/runc")
	if !IsInvocation([]string{"shim", "--root", "/r", "state", "x"}) || IsInvocation([]string{"shim", "-namespace", "n"}) {
		t.Fatal("wrong detection")
	}
}

// TestRequestRoundTrip sends a request with stdio over a socket pair, as the wrapper
// and the shim do.
func TestRequestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan Request, 1)
	nfiles := make(chan int, 1)
	go func() {
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		req, files, err := ReadRequest(c)
		if err != nil {
			t.Error(err)
		}
		for _, f := range files {
			f.Close()
		}
		got <- req
		nfiles <- len(files)
		_ = Reply(c, Response{Handled: true})
	}()
	resp, err := ask(sock, Request{Op: "create", ID: "c1", PidFile: "/p"}, true)
	if err != nil || !resp.Handled {
		t.Fatalf("%+v %v", resp, err)
	}
	if r := <-got; r.ID != "c1" || r.PidFile != "/p" {
		t.Fatalf("request %+v", r)
	}
	if n := <-nfiles; n != 3 {
		t.Fatalf("%d files, want stdin, stdout and stderr", n)
	}
	_ = os.Remove(sock)
}

func TestTakeMemoryMerge(t *testing.T) {
	cases := []struct {
		args  []string
		want  []string
		merge bool
	}{
		{[]string{"x", "--root", "/r", "--log", "/l", FlagMemoryMerge, "restore", "--bundle", "/b", "c1"},
			[]string{"x", "--root", "/r", "--log", "/l", "restore", "--bundle", "/b", "c1"}, true},
		{[]string{"x", "--root", "/r", "restore", "c1"}, []string{"x", "--root", "/r", "restore", "c1"}, false},
		// Only a global flag counts: the value of one, or anything after the command, is left.
		{[]string{"x", "--root", FlagMemoryMerge, "state", "c1"}, []string{"x", "--root", FlagMemoryMerge, "state", "c1"}, false},
		{[]string{"x", "--root", "/r", "exec", FlagMemoryMerge}, []string{"x", "--root", "/r", "exec", FlagMemoryMerge}, false},
	}
	for _, tc := range cases {
		in := slices.Clone(tc.args)
		got, merge := takeMemoryMerge(in)
		if !slices.Equal(got, tc.want) || merge != tc.merge {
			t.Errorf("%v: got %v %v, want %v %v", tc.args, got, merge, tc.want, tc.merge)
		}
		if !slices.Equal(in, tc.args) {
			t.Errorf("%v: the caller's args changed to %v", tc.args, in)
		}
	}
}

// TestMainMemoryMerge runs Main (in a child of the test) with FlagMemoryMerge: the real
// runc it execs gets the command line without the flag, and runs with KSM merging on.
func TestMainMemoryMerge(t *testing.T) {
	if os.Getenv("WRAP_TEST_MAIN") == "1" {
		os.Exit(Main([]string{"x", "--root", "/r", FlagMemoryMerge, "state", "c1"}))
	}
	if why := ksm.Unavailable(); why != "" {
		testenv.Missing(t, "per-process KSM: "+why)
	}
	testenv.NeedRoot(t, "PR_SET_MEMORY_MERGE needs CAP_SYS_RESOURCE")
	dir := t.TempDir()
	real := filepath.Join(dir, "runc")
	if err := os.WriteFile(real, []byte("#!/bin/sh\necho \"$@\"\ngrep merge_any /proc/$$/ksm_stat\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMainMemoryMerge$")
	cmd.Env = append(os.Environ(), "WRAP_TEST_MAIN=1", EnvRunc+"="+real, EnvSocket+"=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := "--root /r state c1\nksm_merge_any: yes\n"; string(out) != want {
		t.Fatalf("the real runc printed %q, want %q", out, want)
	}
}
