package shim

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCloseInheritedListeners: a listener passed as fd 3 (as the start action passes the
// shim its socket) does not reach the processes the shim runs.
func TestCloseInheritedListeners(t *testing.T) {
	if os.Getenv("WARM_TEST_LISTENER_CHILD") == "1" {
		// The "shim": fd 3 is the inherited listener. Its child lists its own fds.
		if os.Getenv("WARM_TEST_LISTENER_CLOSE") == "1" {
			CloseInheritedListeners()
		}
		out, err := exec.Command("sh", "-c", "ls -l /proc/self/fd/").CombinedOutput()
		if err != nil {
			os.Exit(2)
		}
		os.Stdout.Write(out)
		os.Exit(0)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	grandchildFds := func(closeThem bool) string {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestCloseInheritedListeners$")
		cmd.Env = append(os.Environ(), "WARM_TEST_LISTENER_CHILD=1")
		if closeThem {
			cmd.Env = append(cmd.Env, "WARM_TEST_LISTENER_CLOSE=1")
		}
		cmd.ExtraFiles = []*os.File{f}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("child: %v", err)
		}
		return string(out)
	}
	// Without the call the grandchild holds the socket: the test can tell.
	if got := grandchildFds(false); !strings.Contains(got, " 3 -> socket:") {
		t.Fatalf("fd 3 did not reach the grandchild without CloseInheritedListeners:\n%s", got)
	}
	if got := grandchildFds(true); strings.Contains(got, "socket:") {
		t.Fatalf("the grandchild holds a socket:\n%s", got)
	}
}
