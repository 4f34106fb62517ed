//go:build linux

package runctask

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/cgroups/v3/cgroup1"

	"github.com/warmshim/warm/internal/cgroup1default"
)

// pidPath and v1Hierarchy stand in for cgroup1.PidPath(pid) and cgroup1.Load's default
// hierarchy (cgroup1.Default) in the load of a container's cgroup (container.go), with the
// same result without reading /proc/self/mountinfo each time: PidPath reads it once per
// hierarchy the process is in (to find where each is mounted), Default once more. Which
// cgroup v1 hierarchies are mounted, and where, is read once per process: v1 hierarchies
// are mounted at boot, and Load still checks that each of the process's cgroup
// directories exists; a hierarchy the kept mount roots lack makes them read again.

// hierarchy is where cgroup v1 is mounted, as this process first read it.
var hierarchy struct {
	mu    sync.Mutex
	dests map[string]string // guarded by mu; nil until mountinfo was first read
}

// v1Hierarchy is cgroup1.Default, kept once it succeeded.
func v1Hierarchy() ([]cgroup1.Subsystem, error) { return cgroup1default.Subsystems() }

// pidPath is cgroup1.PidPath(pid).
func pidPath(pid int) cgroup1.Path {
	p := fmt.Sprintf("/proc/%d/cgroup", pid)
	paths, err := cgroup1.ParseCgroupFile(p)
	if err != nil {
		return errorPath(fmt.Errorf("parse cgroup file %s: %w", p, err))
	}
	dests, err := cgroupDestinations(false)
	if err != nil {
		return errorPath(err)
	}
	for n := range paths {
		if _, ok := dests[n]; !ok { // mounted since they were read?
			if dests, err = cgroupDestinations(true); err != nil {
				return errorPath(err)
			}
			break
		}
	}
	return existingPath(paths, dests)
}

// cgroupDestinations is mountDestinations of /proc/self/mountinfo, kept once read
// (read again if reread).
func cgroupDestinations(reread bool) (map[string]string, error) {
	hierarchy.mu.Lock()
	defer hierarchy.mu.Unlock()
	if hierarchy.dests == nil || reread {
		f, err := os.Open("/proc/self/mountinfo")
		if err != nil {
			return nil, err
		}
		defer f.Close()
		dests, err := mountDestinations(f)
		if err != nil {
			return nil, err
		}
		hierarchy.dests = dests
	}
	return hierarchy.dests, nil
}

// mountDestinations maps each option of the cgroup v1 mounts in a mountinfo (a controller,
// or name=...) to the root of the mount (field 4), the first mount's where several
// have it: what cgroup1's getCgroupDestination returns for each.
func mountDestinations(r io.Reader) (map[string]string, error) {
	dests := map[string]string{}
	s := bufio.NewScanner(r)
	for s.Scan() {
		fields := strings.Split(s.Text(), " ")
		if len(fields) < 10 || fields[len(fields)-3] != "cgroup" {
			continue
		}
		for _, opt := range strings.Split(fields[len(fields)-1], ",") {
			if _, ok := dests[opt]; !ok {
				dests[opt] = fields[3]
			}
		}
	}
	return dests, s.Err()
}

// existingPath is cgroup1's existingPath with no suffix: each of the process's cgroup
// paths made relative to the root of its hierarchy's mount (for a process in a cgroup
// namespace or a nested mount).
func existingPath(paths, dests map[string]string) cgroup1.Path {
	for n, p := range paths {
		dest, ok := dests[n]
		if !ok {
			return errorPath(cgroup1.ErrNoCgroupMountDestination)
		}
		rel, err := filepath.Rel(dest, p)
		if err != nil {
			return errorPath(err)
		}
		if rel == "." {
			rel = dest
		}
		paths[n] = filepath.Join("/", rel)
	}
	return func(name cgroup1.Name) (string, error) {
		root, ok := paths[string(name)]
		if !ok {
			if root, ok = paths["name="+string(name)]; !ok {
				return "", cgroup1.ErrControllerNotActive
			}
		}
		return root, nil
	}
}

func errorPath(err error) cgroup1.Path {
	return func(cgroup1.Name) (string, error) { return "", err }
}
