package oci

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestUnstartedExitStatus: a sandbox killed before its Start reports runc init's status
// (measured against runc 1.4 in TestPoolHitNeverStarted): 137 for SIGKILL, 2 for the
// other signals that end runc init; any other status (the application exited by itself)
// is kept.
func TestUnstartedExitStatus(t *testing.T) {
	for _, c := range []struct {
		sig          unix.Signal
		status, want int
	}{
		{unix.SIGKILL, 137, 137},
		{unix.SIGTERM, 137, 2},
		{unix.SIGINT, 137, 2},
		{unix.SIGQUIT, 137, 2},
		{unix.SIGSEGV, 137, 2},
		{unix.SIGTERM, 0, 0},     // it had exited on its own before the kill
		{unix.SIGTERM, 143, 143}, // not the SIGKILL's status
		{unix.SIGUSR1, 137, 137}, // runc init ignores it: not the kill's exit
	} {
		if got := UnstartedExitStatus(c.sig, c.status); got != c.want {
			t.Errorf("UnstartedExitStatus(%v, %d) = %d, want %d", c.sig, c.status, got, c.want)
		}
	}
}
