package harness

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Leaks lists what the suite left behind: shim processes started for this containerd,
// mounts under dir (but the harness's own dir/run), and cgroups named after the namespace. An empty result means clean.
func Leaks(dir, namespace string) []string {
	var leaks []string
	// Shim processes: their -address names our socket.
	for _, sp := range ShimProcesses(dir) {
		leaks = append(leaks, fmt.Sprintf("shim process %d: %s", sp.Pid, strings.Join(sp.Args, " ")))
	}
	// Other processes working under dir: runc, CRIU (its cwd is a checkpoint's work
	// directory, even once removed), the suite's containers' processes do not count.
	for _, pid := range processesUnder(dir) {
		cmd, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		leaks = append(leaks, fmt.Sprintf("process %d working in %s: %s", pid, dir, strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " ")))
	}
	// Mounts under dir.
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// dir/run itself is the harness's tmpfs (Containerd.Release unmounts it).
			if len(fields) > 4 && strings.HasPrefix(fields[4], dir) && fields[4] != filepath.Join(dir, RunDirName) {
				leaks = append(leaks, "mount "+fields[4])
			}
		}
		f.Close()
	}
	// Cgroups: containerd's default cgroupsPath is /<namespace>/<id>; pooled sandboxes
	// wait under /warm-pool/<namespace>.
	for _, root := range cgroupRoots() {
		for _, p := range []string{filepath.Join(root, namespace), filepath.Join(root, "warm-pool", namespace)} {
			if _, err := os.Stat(p); err == nil && strings.Contains(p, "warm-pool") {
				leaks = append(leaks, "cgroup "+p)
			}
			entries, err := os.ReadDir(p)
			if err != nil {
				continue
			}
			for _, e := range entries {
				if e.IsDir() {
					leaks = append(leaks, "cgroup "+filepath.Join(p, e.Name()))
				}
			}
		}
	}
	return leaks
}

// processesUnder lists the processes (other than this one) whose working directory is
// dir or below it.
func processesUnder(dir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil {
			continue
		}
		cwd = strings.TrimSuffix(cwd, " (deleted)")
		if cwd == dir || strings.HasPrefix(cwd, dir+"/") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// RemoveNamespaceCgroups removes the empty per-namespace parent cgroups containerd creates.
func RemoveNamespaceCgroups(namespace string) {
	for _, root := range cgroupRoots() {
		_ = os.Remove(filepath.Join(root, namespace))
	}
}

func cgroupRoots() []string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}
	}
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var roots []string
	for _, e := range entries {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			roots = append(roots, p)
		}
	}
	return roots
}

// RemoveCNIRules removes the nat rules (and the chains they jump to) that the CNI bridge
// plugin added for containers of the namespace and that its DEL left behind: the suite
// leaves the host's firewall as it found it.
func RemoveCNIRules(namespace string) []string {
	out, err := exec.Command("iptables", "-t", "nat", "-S").Output()
	if err != nil {
		return nil
	}
	var removed []string
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "-A ") || !strings.Contains(line, `id: \"`+namespace+"-") {
			continue
		}
		args := append([]string{"-t", "nat", "-D"}, splitRule(strings.TrimPrefix(line, "-A "))...)
		if exec.Command("iptables", args...).Run() == nil {
			removed = append(removed, line)
		}
		f := strings.Fields(line)
		if chain := f[len(f)-1]; strings.HasPrefix(chain, "CNI-") {
			_ = exec.Command("iptables", "-t", "nat", "-F", chain).Run()
			_ = exec.Command("iptables", "-t", "nat", "-X", chain).Run()
		}
	}
	return removed
}

// splitRule splits an iptables -S rule into arguments, keeping quoted comments whole.
func splitRule(s string) []string {
	var args []string
	var cur strings.Builder
	inQuote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && s[i+1] == '"':
			cur.WriteByte('"')
			i++
		case c == '"':
			inQuote = !inQuote
		case c == ' ' && !inQuote:
			if cur.Len() > 0 {
				args = append(args, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteByte(c)
		}
	}
	if cur.Len() > 0 {
		args = append(args, cur.String())
	}
	return args
}

// ShimProcess is a running shim.
type ShimProcess struct {
	Pid  int
	Args []string
}

// ShimProcesses lists the shim processes whose command line names dir (the harness's
// containerd address is inside it).
func ShimProcesses(dir string) []ShimProcess {
	var out []ShimProcess
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		if len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") || !strings.Contains(string(data), dir) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		out = append(out, ShimProcess{Pid: pid, Args: args})
	}
	return out
}

// ShimSocketHolders lists the processes, other than shims, that hold a listening shim
// socket of dir's containerd (those under dir/s): "PID (COMM)" each.
func ShimSocketHolders(dir string) []string {
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return nil
	}
	prefix := filepath.Join(dir, "s") + "/"
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		// Num RefCount Protocol Flags Type St Inode Path
		f := strings.Fields(line)
		if len(f) >= 8 && strings.HasPrefix(f[7], prefix) {
			inodes["socket:["+f[6]+"]"] = true
		}
	}
	var out []string
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	seen := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fd)
		if err != nil || !inodes[l] {
			continue
		}
		pid := strings.Split(fd, "/")[2]
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		c := strings.TrimSpace(string(comm))
		if strings.HasPrefix(c, "containerd-shim") || seen[pid] {
			continue
		}
		seen[pid] = true
		out = append(out, pid+" ("+c+")")
	}
	return out
}
