// Package testenv is what a test does when something it needs is missing: it skips,
// naming what is missing, except under WARM_INTEGRATION=1 (make test, which installs
// everything and runs as root), where a missing part is a failure, so that nothing
// skips in CI.
package testenv

import (
	"os"
	"testing"
)

// Integration reports whether the tests run as make test runs them (WARM_INTEGRATION=1).
func Integration() bool { return os.Getenv("WARM_INTEGRATION") == "1" }

// Missing skips tb because what is missing (a tool, a kernel feature, root), or fails
// it under WARM_INTEGRATION=1.
func Missing(tb testing.TB, what string) {
	tb.Helper()
	if Integration() {
		tb.Fatalf("WARM_INTEGRATION=1 but missing: %s", what)
	}
	tb.Skipf("needs %s (make test installs and runs everything it needs, as root)", what)
}

// NeedRoot calls Missing unless the test runs as root; why says what root is for.
func NeedRoot(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Missing(tb, "root ("+why+")")
	}
}
