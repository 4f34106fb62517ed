// Package procfs reads the little of /proc that warm needs: a process's state, parent
// and nice value, its signal state, the process tree, and whether a path is a mount
// point.
package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Stat is the part of /proc/PID/stat warm reads.
type Stat struct {
	State byte // R, S, D, Z, T, ...
	PPid  int
	Nice  int
	Flags uint64 // the kernel's PF_* flags of the task
	// CPU time in clock ticks: user and system, and those of waited-for children.
	Utime, Stime, Cutime, Cstime uint64
}

// ParseStat parses the text of /proc/PID/stat. The command name may hold spaces and
// parentheses, so fields are counted from after the last ')'.
func ParseStat(data []byte) (Stat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return Stat{}, errors.New("proc stat: no command field")
	}
	// After ')': state(3) ppid(4) ... nice(19).
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 17 {
		return Stat{}, errors.New("proc stat: too few fields")
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, err
	}
	nice, err := strconv.Atoi(f[16])
	if err != nil {
		return Stat{}, err
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	if err != nil {
		return Stat{}, err
	}
	st := Stat{State: f[0][0], PPid: ppid, Nice: nice, Flags: flags}
	// utime(14) stime(15) cutime(16) cstime(17); cutime and cstime are signed in the
	// kernel's format but never negative.
	for i, p := range []*uint64{&st.Utime, &st.Stime, &st.Cutime, &st.Cstime} {
		if *p, err = strconv.ParseUint(f[11+i], 10, 64); err != nil {
			return Stat{}, err
		}
	}
	return st, nil
}

// ReadStat reads /proc/PID/stat.
func ReadStat(pid int) (Stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(data)
}

// Dead reports whether pid is gone or a zombie.
func Dead(pid int) bool {
	st, err := ReadStat(pid)
	return err != nil || st.State == 'Z'
}

// pfExiting is the kernel's PF_EXITING: the task is in do_exit.
const pfExiting = 0x4

// Dying reports whether pid is gone, a zombie, or exiting. A PID namespace's init that
// was killed stays in do_exit, in state S, until every other process of its namespace
// is reaped; one of them held by a tracer (CRIU) keeps it there.
func Dying(pid int) bool {
	st, err := ReadStat(pid)
	return err != nil || st.State == 'Z' || st.State == 'X' || st.Flags&pfExiting != 0
}

// Descendants returns pid's descendants, deepest first (the order to kill a tree in).
func Descendants(pid int) []int {
	children := map[int][]int{}
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		st, err := ParseStat(data)
		if err != nil {
			continue
		}
		self, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		children[st.PPid] = append(children[st.PPid], self)
	}
	var order []int
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			walk(c)
			order = append(order, c)
		}
	}
	walk(pid)
	return order
}

// IsMountPoint reports whether p is the mount point of a mount in this mount namespace.
func IsMountPoint(p string) (bool, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == p {
			return true, nil
		}
	}
	return false, nil
}

// Signals is the signal state of a process, from /proc/PID/status: bit n-1 of a mask is
// signal n.
type Signals struct {
	Name    string // the command name (comm)
	Zombie  bool
	Pending uint64 // pending for the thread or the whole process (SigPnd | ShdPnd)
	Blocked uint64
	Ignored uint64
	Caught  uint64
	// NamespacePid is the process's pid in its own (innermost) PID namespace: 1 for a
	// namespace's init, which the kernel never delivers a signal it has no handler for
	// (SIGKILL and SIGSTOP from an ancestor namespace aside).
	NamespacePid int
}

// Has reports whether signal sig's bit is set in mask.
func Has(mask uint64, sig int) bool { return sig > 0 && sig <= 64 && mask&(1<<uint(sig-1)) != 0 }

// ParseSignals parses the text of /proc/PID/status.
func ParseSignals(data []byte) (Signals, error) {
	var s Signals
	masks := map[string]*uint64{"SigPnd": &s.Pending, "ShdPnd": &s.Pending, "SigBlk": &s.Blocked, "SigIgn": &s.Ignored, "SigCgt": &s.Caught}
	seen := 0
	for _, l := range strings.Split(string(data), "\n") {
		key, val, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch {
		case key == "Name":
			s.Name = val
		case key == "State":
			s.Zombie = strings.HasPrefix(val, "Z")
		case key == "NSpid":
			f := strings.Fields(val)
			if len(f) == 0 {
				return Signals{}, errors.New("proc status: empty NSpid")
			}
			n, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return Signals{}, fmt.Errorf("proc status: NSpid %q: %w", val, err)
			}
			s.NamespacePid = n
		case masks[key] != nil:
			v, err := strconv.ParseUint(val, 16, 64)
			if err != nil {
				return Signals{}, fmt.Errorf("proc status: %s %q: %w", key, val, err)
			}
			*masks[key] |= v
			seen++
		}
	}
	if seen != len(masks) {
		return Signals{}, errors.New("proc status: signal masks missing")
	}
	return s, nil
}

// ReadSignals reads the signal state of pid.
func ReadSignals(pid int) (Signals, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Signals{}, err
	}
	return ParseSignals(data)
}

// InDir returns the processes whose working directory is dir (symbolic links in dir
// resolved), this one aside: CRIU works in the directory runc gives it, so those left
// there by a runc that was killed can be found after it.
func InDir(dir string) []int {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	self := os.Getpid()
	var out []int
	cwds, _ := filepath.Glob("/proc/[0-9]*/cwd")
	for _, c := range cwds {
		if target, err := os.Readlink(c); err != nil || target != dir {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(c))); err == nil && pid != self {
			out = append(out, pid)
		}
	}
	return out
}
