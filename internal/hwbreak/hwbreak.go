// Package hwbreak finds out whether this host's hardware breakpoints fire for a traced
// process, and makes CRIU do without them where they do not.
//
// At the end of a dump CRIU lets the task run its parasite's rt_sigreturn and stops it
// there with a hardware breakpoint (an x86 debug register set through ptrace); a restore
// stops its tasks at the end of the restorer the same way. On a host whose breakpoints
// never fire, CRIU waits for that trap forever, with the task's other threads stopped:
// seen on a Firecracker VM (kernel 6.18.44-fc), where every dump hung, of `sleep` as of
// the sample services, whether run by warm, by containerd's runc shim or by hand (criu
// issues #107 and #162 describe the same wait). CRIU has a switch for this path:
// fault-injection code 130 (FI_NO_BREAKPOINTS) in CRIU_FAULT makes it stop the task on
// the rt_sigreturn system call instead, which needs only PTRACE_SYSCALL.
//
// Apply probes once per boot (the answer is kept in a file named by the boot id) and,
// where breakpoints do not fire, puts CRIU_FAULT=130 in this process's environment, which
// runc and the CRIU under it inherit. An operator's own CRIU_FAULT is left alone.
package hwbreak

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/warmshim/warm/internal/atomicfile"
)

// EnvVar is the variable CRIU reads its fault-injection code from, and NoBreakpoints
// the code that makes it stop tasks without hardware breakpoints. EnvMarker is set
// beside it when Apply set it (not an operator), for the processes that inherit both
// to say so.
const (
	EnvVar        = "CRIU_FAULT"
	NoBreakpoints = "130"
	EnvMarker     = "WARM_HW_BREAKPOINTS"
)

// Broken reports whether this process's environment says that Apply (here or in the
// process that started it) found the host's hardware breakpoints not firing.
func Broken() bool {
	return os.Getenv(EnvMarker) == "broken" && os.Getenv(EnvVar) == NoBreakpoints
}

// ErrUnsupported is the probe's answer on an architecture it does not know how to
// probe: CRIU is left to its default there.
var ErrUnsupported = errors.New("hardware breakpoint probe: not supported on this architecture")

// Result is what Apply found.
type Result struct {
	Works  bool   // the host's hardware breakpoints fire (or could not be probed)
	Set    bool   // Apply put CRIU_FAULT=130 in the environment
	Cached bool   // the answer came from the cache file, not a probe
	Err    error  // why the probe failed (Works is then true: CRIU's default is kept)
	Kept   string // an operator's CRIU_FAULT that Apply left in place
}

var (
	mu     sync.Mutex
	done   bool   // guarded by mu
	result Result // guarded by mu
)

// Apply finds out, once per process, whether hardware breakpoints fire on this host,
// reading the answer from dir (and writing it there, root-only, after a probe) for this
// boot, and sets CRIU_FAULT=130 in the environment where they do not. It returns what it
// found; later calls return the same.
func Apply(dir string) Result {
	mu.Lock()
	defer mu.Unlock()
	if done {
		return result
	}
	done = true
	result = apply(dir, Probe)
	return result
}

func apply(dir string, probe func() (bool, error)) Result {
	if v := os.Getenv(EnvVar); v != "" {
		return Result{Works: true, Kept: v}
	}
	var r Result
	boot, _ := bootID() // none: no cache, a probe every time
	works, ok := readCache(dir, boot)
	if ok {
		r.Works, r.Cached = works, true
	} else {
		works, err := probe()
		if err != nil {
			// Unknown: keep CRIU's default, and probe again next time.
			return Result{Works: true, Err: err}
		}
		r.Works = works
		writeCache(dir, boot, works)
	}
	if !r.Works {
		os.Setenv(EnvVar, NoBreakpoints)
		os.Setenv(EnvMarker, "broken")
		r.Set = true
	}
	return r
}

const cacheName = "hw-breakpoints"

// TestCacheDir is where the tests, the bench and the critest runner keep the answer:
// not the host's run_dir.
func TestCacheDir() string { return filepath.Join(os.TempDir(), "warm-test-hwbreak") }

// readCache returns the answer kept in dir for boot, if there is one.
func readCache(dir, boot string) (works, ok bool) {
	if boot == "" {
		return false, false
	}
	data, err := os.ReadFile(filepath.Join(dir, cacheName))
	if err != nil {
		return false, false
	}
	id, answer, found := strings.Cut(strings.TrimSpace(string(data)), " ")
	if !found || id != boot {
		return false, false
	}
	switch answer {
	case "works":
		return true, true
	case "broken":
		return false, true
	}
	return false, false
}

// writeCache keeps the answer in dir for boot; a failure only costs a probe later.
func writeCache(dir, boot string, works bool) {
	if boot == "" {
		return
	}
	answer := "broken"
	if works {
		answer = "works"
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	_ = atomicfile.Write(filepath.Join(dir, cacheName), []byte(boot+" "+answer+"\n"))
}

func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "", errors.New("boot id: empty")
	}
	return string(b), nil
}
