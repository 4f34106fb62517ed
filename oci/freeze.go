package oci

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// FreezeContainer freezes the cgroup of runc container id (under runc root root) and
// waits until the kernel reports it frozen; thaw undoes it. A periodic checkpoint freezes
// the task itself before `runc checkpoint`: CRIU then finds the cgroup frozen and skips
// its own freeze, which polls the freezer every 100 ms (so a task stopped for 2 ms
// stays stopped for at least 100). CRIU leaves a cgroup it found frozen frozen. A cgroup
// already frozen (or freezing) is left alone and thaw is nil: it is not ours to thaw.
func FreezeContainer(root, id string) (thaw func() error, err error) {
	paths, err := containerCgroups(root, id)
	if err != nil {
		return nil, err
	}
	if frozen, err := isFrozen(paths); err != nil || frozen {
		return nil, err
	}
	if err := freezeDir(paths, true); err != nil {
		_ = freezeDir(paths, false)
		return nil, fmt.Errorf("freeze %s: %w", id, err)
	}
	return func() error { return freezeDir(paths, false) }, nil
}

// ThawContainer thaws runc container id's cgroup if it is frozen (or freezing), and
// reports whether it was.
func ThawContainer(root, id string) (bool, error) {
	paths, err := containerCgroups(root, id)
	if err != nil {
		return false, err
	}
	if frozen, err := isFrozen(paths); err != nil || !frozen {
		return false, err
	}
	if err := freezeDir(paths, false); err != nil {
		return true, fmt.Errorf("thaw %s: %w", id, err)
	}
	return true, nil
}

// containerCgroups is runc container id's cgroup paths, from its state under root.
func containerCgroups(root, id string) (map[string]string, error) {
	st, err := readRuncState(filepath.Join(root, id))
	if err != nil {
		return nil, err
	}
	return st.cgroupPaths()
}

// isFrozen reports whether a container's cgroup is frozen or freezing.
func isFrozen(paths map[string]string) (bool, error) {
	dir, err := freezerDir(paths)
	if err != nil {
		return false, err
	}
	if unified() {
		v, err := os.ReadFile(filepath.Join(dir, "cgroup.freeze"))
		return strings.TrimSpace(string(v)) == "1", err
	}
	v, err := os.ReadFile(filepath.Join(dir, "freezer.state"))
	return strings.TrimSpace(string(v)) != "THAWED", err
}

// RestoreFreezer pauses a restore in progress (refillgate.Freezer): it writes the freezer
// of the cgroup runc restores into (the v1 freezer hierarchy's, or the v2 cgroup), and
// does not wait for the kernel to report the new state. CRIU itself runs in that cgroup
// (runc moves it there), so the whole restore stops. A cgroup runc has not created yet,
// or removed already, is nothing to pause.
type RestoreFreezer struct{ file, frozen, thawed string }

// NewRestoreFreezer returns the freezer of cgroupsPath (as in the sandbox's spec).
func NewRestoreFreezer(cgroupsPath string) *RestoreFreezer {
	if unified() {
		return &RestoreFreezer{file: filepath.Join(cgroupV2Root, cgroupsPath, "cgroup.freeze"), frozen: "1", thawed: "0"}
	}
	return &RestoreFreezer{file: filepath.Join(cgroupV2Root, "freezer", cgroupsPath, "freezer.state"), frozen: "FROZEN", thawed: "THAWED"}
}

func (f *RestoreFreezer) Freeze() error { return f.write(f.frozen) }
func (f *RestoreFreezer) Thaw() error   { return f.write(f.thawed) }

func (f *RestoreFreezer) write(v string) error {
	fd, err := os.OpenFile(f.file, os.O_WRONLY, 0)
	if err == nil {
		_, err = fd.WriteString(v)
		if cerr := fd.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w", f.file, err)
	}
	return nil
}
