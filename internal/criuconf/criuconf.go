// Package criuconf gives the checkpoints warm takes for itself (the periodic checkpoints
// of crash recovery, templates) their CRIU options. runc passes CRIU only what its own
// flags cover, and CRIU 4.1.1 crashes on a network-lock line in the configuration file
// runc names over RPC (org.criu.config, /etc/criu/runc.conf), so the options go in a file
// named by CRIU_CONFIG_FILE in runc's environment, which CRIU reads before runc's.
//
// The one option is the network lock. For a dump, CRIU locks the network namespace of
// the task (by default with iptables rules, about 75 ms of a 220 ms dump on a 2-core
// machine, all of it while the task is frozen), so that no TCP packet reaches a dumped
// process that is then killed and answers with a reset. warm's own dumps leave the task
// running and never dump established connections (runc's --tcp-established is not
// given), so the lock protects nothing there: skip is the default. CRIU records the
// method in the images, and a restore of them uses it too.
package criuconf

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/warmshim/warm/internal/atomicfile"
)

// Methods are the network lock methods CRIU knows.
var Methods = []string{"skip", "iptables", "nftables"}

// EnvVar is the variable CRIU reads a configuration file's path from.
const EnvVar = "CRIU_CONFIG_FILE"

// Env returns the environment entries that make the CRIU under a runc command read a
// configuration file whose network lock is method, writing the file in dir (created
// root-only) unless it holds that already: a file removed or changed meanwhile (a
// run_dir cleaned: CRIU ignores a configuration file it cannot open) is written again.
// When this process's environment already names a CRIU configuration file (the
// operator's), Env returns nothing: that file applies.
func Env(dir, method string) ([]string, error) {
	if !slices.Contains(Methods, method) {
		return nil, fmt.Errorf("CRIU network lock %q: must be one of %v", method, Methods)
	}
	if os.Getenv(EnvVar) != "" {
		return nil, nil
	}
	path := filepath.Join(dir, "criu-network-lock-"+method+".conf")
	if err := write(dir, path, []byte("network-lock "+method+"\n")); err != nil {
		return nil, err
	}
	return []string{EnvVar + "=" + path}, nil
}

// write puts data in path unless it holds it already: in a temporary file of dir,
// renamed over path, so that a CRIU reading it never sees half of it (several shims
// write the same file).
func write(dir, path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("CRIU configuration: %w", err)
	}
	if err := atomicfile.Write(path, data); err != nil {
		return fmt.Errorf("CRIU configuration %s: %w", path, err)
	}
	return nil
}
