package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"
)

// unified reports whether the host runs a pure cgroup v2 hierarchy.
func unified() bool { return cgroups.Mode() == cgroups.Unified }

// moveCgroups moves every process of a frozen container from its cgroups (paths, one per
// hierarchy, as in runc's state) to newPath in each hierarchy, keeping them frozen: the
// destination freezer is frozen before the first process arrives. It returns the new
// paths, in the same form, and the hierarchies whose processes migrated to a new cgroup
// (rather than going with their cgroup, renamed). Old cgroups are removed. prepare (if
// not nil) runs once the new cgroups exist, before any cgroup below them and before any
// process arrives, with the new paths and the migrated hierarchies.
func moveCgroups(paths map[string]string, oldPath, newPath string, prepare func(moved map[string]string, migrated map[string]bool) error) (map[string]string, map[string]bool, moveTimes, error) {
	var tm moveTimes
	began := time.Now()
	oldPath, newPath = "/"+strings.Trim(oldPath, "/"), "/"+strings.Trim(newPath, "/")
	moved := map[string]string{}
	migrate := map[string]string{} // old directory -> new, once per directory
	migrated := map[string]bool{}
	// Controllers mounted together (cpu,cpuacct; net_cls,net_prio) share a directory:
	// it is renamed or migrated once.
	renamed := map[string]string{}
	sibling := filepath.Dir(oldPath) == filepath.Dir(newPath)
	for subsys, p := range paths {
		if !strings.HasSuffix(p, oldPath) {
			return nil, nil, tm, fmt.Errorf("cgroup %s of %s does not end in %s", p, subsys, oldPath)
		}
		np := strings.TrimSuffix(p, oldPath) + newPath
		if done, ok := renamed[p]; ok {
			moved[subsys] = done
			continue
		}
		// A v1 cgroup can be renamed to a sibling: no process moves (a v1 migration
		// costs an RCU grace period per process and hierarchy), and the freezer state
		// and any cgroups below go with it. cgroup2 refuses renames: its processes
		// migrate below.
		if sibling && subsys != "" && os.Rename(p, np) == nil {
			moved[subsys], renamed[p] = np, np
			continue
		}
		// On a hybrid host the cgroup2 hierarchy carries no controller: the processes
		// stay in the sandbox's cgroup there (runc's state says so, and removes it),
		// which spares a migration on the hit's path.
		if sibling && subsys == "" && !unified() {
			moved[subsys] = p
			continue
		}
		moved[subsys] = np
		migrate[p] = np
		migrated[subsys] = true
	}
	if len(migrate) == 0 {
		tm.Create = time.Since(began)
		return moved, migrated, tm, nil
	}
	// The new cgroups, with the sandbox's cgroups below them (an application or its
	// restore may have made some) at the same relative paths.
	subs := map[string][]string{}
	mkdir := func(np string, rels []string) error {
		for _, rel := range rels {
			dst := filepath.Join(np, rel)
			if unified() && rel == "." {
				if err := createCgroupV2(cgroupV2Root, strings.TrimPrefix(dst, cgroupV2Root)); err != nil {
					return err
				}
			} else if err := os.MkdirAll(dst, 0o755); err != nil {
				return fmt.Errorf("create cgroup %s: %w", dst, err)
			}
			if moved["cpuset"] == np {
				if err := initCpuset(dst); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for p, np := range migrate {
		subs[p] = subCgroups(p)
		if err := mkdir(np, []string{"."}); err != nil {
			return moved, migrated, tm, err
		}
	}
	// Rules a cgroup's children copy when they are made (v1 devices) go first.
	if prepare != nil {
		if err := prepare(moved, migrated); err != nil {
			return moved, migrated, tm, err
		}
	}
	for p, np := range migrate {
		if err := mkdir(np, subs[p]); err != nil {
			return moved, migrated, tm, err
		}
		// v2: the controllers the sandbox's cgroups gave their children, as they were (a
		// cgroup with processes cannot give any).
		if unified() && len(subs[p]) > 0 {
			for _, rel := range append([]string{"."}, subs[p]...) {
				on, err := os.ReadFile(filepath.Join(p, rel, "cgroup.subtree_control"))
				if err != nil || len(strings.Fields(string(on))) == 0 {
					continue
				}
				var add []string
				for _, c := range strings.Fields(string(on)) {
					add = append(add, "+"+c)
				}
				if err := os.WriteFile(filepath.Join(np, rel, "cgroup.subtree_control"), []byte(strings.Join(add, " ")), 0); err != nil {
					return moved, migrated, tm, fmt.Errorf("cgroup %s: subtree_control: %w", filepath.Join(np, rel), err)
				}
			}
		}
	}
	tm.Create = time.Since(began)
	// Freeze the destination first (when the freezer itself migrates), so processes
	// stay frozen as they move (a freezer's state holds for the cgroups below it).
	if migrated["freezer"] || unified() {
		if err := freezeDir(moved, true); err != nil {
			return moved, migrated, tm, err
		}
	}
	tm.Freeze = time.Since(began) - tm.Create
	for p, np := range migrate {
		for _, rel := range append([]string{"."}, subs[p]...) {
			pids, err := readPids(filepath.Join(p, rel, "cgroup.procs"))
			if err != nil {
				return moved, migrated, tm, err
			}
			dst := filepath.Join(np, rel, "cgroup.procs")
			for _, pid := range pids {
				if err := os.WriteFile(dst, []byte(strconv.Itoa(pid)), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
					// ESRCH: the process exited meanwhile; anything else is fatal.
					if !strings.Contains(err.Error(), "no such process") {
						return moved, migrated, tm, fmt.Errorf("move pid %d to cgroup %s: %w", pid, dst, err)
					}
				}
			}
		}
	}
	tm.Migrate = time.Since(began) - tm.Create - tm.Freeze
	// The emptied cgroups go in the background: removing them is not on the hit's path,
	// and an exiting task can keep one busy for a moment.
	go func() {
		for p := range migrate {
			removeCgroupTree(p)
		}
	}()
	return moved, migrated, tm, nil
}

// subCgroups lists the cgroups below dir, relative to it, parents before children.
func subCgroups(dir string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel)
		return nil
	})
	return out
}

// removeCgroupTree removes a cgroup and the cgroups below it, children first.
func removeCgroupTree(p string) {
	subs := subCgroups(p)
	for i := len(subs) - 1; i >= 0; i-- {
		removeCgroup(filepath.Join(p, subs[i]))
	}
	removeCgroup(p)
}

// moveTimes are the phases of a cgroup move, for the debug log: on cgroup v2 every write
// that takes the kernel's cgroup_threadgroup_rwsem (a migration, a subtree_control
// change) waits for an RCU grace period unless cgroup2 is mounted with favordynmods.
type moveTimes struct {
	Create, Freeze, Migrate time.Duration
}

// cgroupV2Root is where the unified hierarchy is mounted.
const cgroupV2Root = "/sys/fs/cgroup"

// createCgroupV2 makes the cgroup path (absolute within the hierarchy mounted at root)
// the way runc does: every ancestor delegates all the controllers it has to its
// children, so the leaf can take the container's resource limits. A subtree_control file
// is written only where a controller is missing: each write costs a grace period, and
// on a pool hit the ancestors (the namespace's or the pod's cgroup) are usually set up
// already.
func createCgroupV2(root, path string) error {
	dir := root
	elems := strings.Split(strings.Trim(path, "/"), "/")
	for _, e := range elems {
		if e == "" || e == "." || e == ".." {
			return fmt.Errorf("create cgroup %s: bad path element %q", path, e)
		}
		if err := enableControllers(dir); err != nil {
			return fmt.Errorf("create cgroup %s: %w", path, err)
		}
		dir = filepath.Join(dir, e)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
	}
	return nil
}

// enableControllers makes dir delegate every controller it has to its children, where it
// can.
func enableControllers(dir string) error {
	have, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return err
	}
	on, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	enabled := map[string]bool{}
	for _, c := range strings.Fields(string(on)) {
		enabled[c] = true
	}
	var add []string
	for _, c := range strings.Fields(string(have)) {
		if !enabled[c] {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	// As runc: all at once, else one by one; one that cannot be enabled (a cgroup with
	// processes of its own, a threaded subtree) is left off, and a limit that needs it
	// fails when the resources are applied, naming the file.
	f := filepath.Join(dir, "cgroup.subtree_control")
	if os.WriteFile(f, []byte(strings.Join(add, " ")), 0) != nil {
		for _, c := range add {
			_ = os.WriteFile(f, []byte(c), 0)
		}
	}
	return nil
}

// pickProcsDir chooses the hierarchy whose cgroup.procs lists the container's processes.
func pickProcsDir(paths map[string]string) string {
	for _, k := range []string{"freezer", "pids", "memory", "devices", ""} {
		if p, ok := paths[k]; ok {
			return p
		}
	}
	for _, p := range paths {
		return p
	}
	return ""
}

// procsUnder lists the processes of cgroup dir and of the cgroups below it.
func procsUnder(dir string) ([]int, error) {
	pids, err := readPids(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	for _, rel := range subCgroups(dir) {
		more, _ := readPids(filepath.Join(dir, rel, "cgroup.procs"))
		pids = append(pids, more...)
	}
	return pids, nil
}

func readPids(path string) ([]int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

// initCpuset copies cpus and mems from the parent, which a new v1 cpuset needs before
// it can take a process.
func initCpuset(dir string) error {
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, _ := os.ReadFile(filepath.Join(dir, f))
		if strings.TrimSpace(string(cur)) != "" {
			continue
		}
		// Walk up to the first ancestor with a value, filling the chain on the way back.
		var chain []string
		d := dir
		var val []byte
		for {
			chain = append(chain, d)
			d = filepath.Dir(d)
			v, err := os.ReadFile(filepath.Join(d, f))
			if err != nil {
				return fmt.Errorf("cpuset %s: %w", d, err)
			}
			if strings.TrimSpace(string(v)) != "" {
				val = v
				break
			}
		}
		for i := len(chain) - 1; i >= 0; i-- {
			if err := os.WriteFile(filepath.Join(chain[i], f), val, 0); err != nil {
				return fmt.Errorf("cpuset %s: %w", chain[i], err)
			}
		}
	}
	return nil
}

// freezeDir freezes (or thaws) a container's cgroups: the v1 freezer hierarchy, or the v2
// cgroup on a pure v2 host. It waits until the kernel reports the new state.
func freezeDir(paths map[string]string, freeze bool) error {
	p, err := freezerDir(paths)
	if err != nil {
		return err
	}
	if unified() {
		v := "0"
		if freeze {
			v = "1"
		}
		if err := os.WriteFile(filepath.Join(p, "cgroup.freeze"), []byte(v), 0); err != nil {
			return fmt.Errorf("cgroup.freeze %s: %w", p, err)
		}
		return waitFor(func() bool {
			ev, _ := os.ReadFile(filepath.Join(p, "cgroup.events"))
			return strings.Contains(string(ev), "frozen "+v)
		})
	}
	want := "THAWED"
	if freeze {
		want = "FROZEN"
	}
	if err := os.WriteFile(filepath.Join(p, "freezer.state"), []byte(want), 0); err != nil {
		return fmt.Errorf("freezer.state %s: %w", p, err)
	}
	return waitFor(func() bool {
		st, _ := os.ReadFile(filepath.Join(p, "freezer.state"))
		return strings.TrimSpace(string(st)) == want
	})
}

// freezerDir is the cgroup whose freezer a container's cgroups (runc's paths) use: the
// v2 cgroup on a pure v2 host, else the v1 freezer hierarchy's.
func freezerDir(paths map[string]string) (string, error) {
	if unified() {
		if p, ok := paths[""]; ok {
			return p, nil
		}
		return "", errors.New("no cgroup v2 path")
	}
	if p, ok := paths["freezer"]; ok {
		return p, nil
	}
	return "", errors.New("no freezer cgroup")
}

// waitFor polls a state the kernel reaches in microseconds to milliseconds.
func waitFor(cond func() bool) error {
	for i := 0; i < 5000; i++ {
		if cond() {
			return nil
		}
		time.Sleep(100 * time.Microsecond)
	}
	return errors.New("cgroup freezer did not settle within 0.5s")
}

// removeCgroup removes an emptied cgroup, retrying while exiting tasks linger.
func removeCgroup(p string) {
	for i := 0; i < 50; i++ {
		if err := os.Remove(p); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// killCgroup kills every process of a container's cgroups and waits (up to a second)
// until they are gone. Frozen processes are thawed so the kill takes effect.
func killCgroup(paths map[string]string) {
	_ = freezeDir(paths, false)
	list := pickProcsDir(paths)
	for i := 0; i < 100; i++ {
		pids, err := procsUnder(list)
		if err != nil || len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ReleaseKilledRestore removes what a runc restore of container id (runc root runcRoot,
// bundle, CRIU work directory workPath) leaves behind when it is killed, which runc and
// CRIU remove on their way out otherwise. Called after any failed restore: it acts only
// on what is there.
//   - runc's bind mount of the root filesystem for CRIU, "criu-root" in the container's
//     state directory (left there, every later runc delete of the container fails:
//     "device or resource busy");
//   - CRIU's cgroup yard (".criu.cgyard.*", a tmpfs with every cgroup hierarchy) in its
//     work directory;
//   - the container's cgroups, when runc recorded no state: runc creates them before
//     CRIU restores the tasks into them and records its state only after, so runc
//     delete finds nothing to remove. While the state exists they are runc delete's; a
//     systemd cgroup path is left alone. Any process still there (a task CRIU was
//     restoring) is killed first.
func ReleaseKilledRestore(runcRoot, id, bundle, workPath string) {
	if runcRoot == "" || id == "" || strings.ContainsRune(id, '/') {
		return
	}
	mounts := []string{filepath.Join(runcRoot, id, "criu-root")}
	if workPath != "" {
		yards, _ := filepath.Glob(filepath.Join(workPath, ".criu.cgyard.*"))
		mounts = append(mounts, yards...)
	}
	for _, d := range mounts {
		// A lazy unmount takes the mounts below it (the yard's hierarchies) too.
		if err := unix.Unmount(d, unix.MNT_DETACH); err == nil {
			_ = os.Remove(d)
		}
	}
	if _, err := os.Stat(filepath.Join(runcRoot, id, "state.json")); !errors.Is(err, os.ErrNotExist) {
		return
	}
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return
	}
	var sp struct {
		Linux struct {
			CgroupsPath string `json:"cgroupsPath"`
		} `json:"linux"`
	}
	if json.Unmarshal(data, &sp) != nil || sp.Linux.CgroupsPath == "" || strings.Contains(sp.Linux.CgroupsPath, ":") {
		return
	}
	paths := hostCgroupPaths(sp.Linux.CgroupsPath)
	for k, p := range paths {
		if _, err := os.Stat(p); err != nil {
			delete(paths, k)
		}
	}
	if len(paths) == 0 {
		return
	}
	killCgroup(paths)
	for _, p := range paths {
		removeCgroup(p)
	}
}

// hostCgroupPaths returns path in each of the host's cgroup hierarchies, by subsystem
// ("" for cgroup2).
func hostCgroupPaths(path string) map[string]string {
	if unified() {
		return map[string]string{"": filepath.Join(cgroupV2Root, path)}
	}
	paths := map[string]string{}
	entries, _ := os.ReadDir(cgroupV2Root)
	for _, e := range entries {
		// Co-mounted controllers ("cpu,cpuacct") have links by each name: one is enough.
		if !e.IsDir() || e.Type()&os.ModeSymlink != 0 {
			continue
		}
		key := e.Name()
		if key == "unified" {
			key = ""
		}
		paths[key] = filepath.Join(cgroupV2Root, e.Name(), path)
	}
	return paths
}
