package oci

import (
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
	st, err := readRuncState(filepath.Join(root, id))
	if err != nil {
		return nil, err
	}
	paths, err := st.cgroupPaths()
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
