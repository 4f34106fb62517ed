package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"time"

	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/internal/pipewatch"
	"github.com/warmshim/warm/internal/procfs"
)

// AdoptRequest is a container that takes over a frozen sandbox.
type AdoptRequest struct {
	ContainerID, Bundle string
	Spec                *specs.Spec
	// The stdio runc would have given the container's process (from the shim's
	// process package): the sandbox's pipes are spliced to them.
	Stdin, Stdout, Stderr *os.File
	// Rebind are network files to bind over the template's (Verdict.Rebind).
	Rebind []specs.Mount
}

// Adopt makes the frozen sandbox the container req.ContainerID: it moves into the
// requested cgroup with the requested resources (still frozen), becomes that runc
// container, takes the requested hostname, runs the createRuntime hooks with its state,
// and has its stdio spliced to the container's. It stays frozen until Thaw (Start).
// Adopt owns req's stdio files: spliced in on success, closed on error. On error the
// sandbox is killed and must be destroyed.
func (s *Sandboxes) Adopt(ctx context.Context, sb *Sandbox, req AdoptRequest) (retErr error) {
	defer func() {
		if retErr != nil {
			for _, f := range []*os.File{req.Stdin, req.Stdout, req.Stderr} {
				if f != nil {
					f.Close()
				}
			}
		}
	}()
	sp := req.Spec
	if sp.Linux == nil || sp.Linux.CgroupsPath == "" || strings.Contains(sp.Linux.CgroupsPath, ":") {
		return fmt.Errorf("adopt: cgroupsPath %q is not a cgroupfs path", cgroupsPathOf(sp))
	}
	// A sandbox whose process died (a frozen one can be killed, or OOM-killed on v2) is
	// never handed out as a live container.
	if procfs.Dying(sb.Pid) {
		return fmt.Errorf("adopt: the sandbox's process %d has exited", sb.Pid)
	}
	renamed := false
	var moved map[string]string
	defer func() {
		if retErr == nil {
			return
		}
		// Leave nothing that could stop a cold start of the same container.
		id := sb.ID
		if renamed {
			id = req.ContainerID
		}
		s.discard(ctx, sb.Bundle, id, moved)
	}()
	began := time.Now()
	var tMove, tRes, tRename, tHooks time.Duration
	var mt moveTimes
	defer func() {
		// A hit's path: the fields are built only when they are logged.
		if retErr == nil && log.GetLevel() >= log.DebugLevel {
			log.G(ctx).WithField("container", req.ContainerID).WithField("move", tMove).
				WithField("move_create", mt.Create).WithField("move_freeze", mt.Freeze).WithField("move_migrate", mt.Migrate).
				WithField("resources", tRes).
				WithField("rename", tRename).WithField("hooks", tHooks).WithField("total", time.Since(began)).Debug("sandbox adopted")
		}
	}()
	// runc's state, as the restore read it unless it changed since: it gives the cgroup
	// the sandbox is in, and is what the rename rewrites.
	st, err := adoptionState(filepath.Join(s.Root, sb.ID), sb.state)
	if err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	oldPath, err := st.cgroupsPath()
	if err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	// A renamed cgroup keeps its device rules; a new one has its parent's (v1) or none
	// (v2): it gets the rules runc gave the sandbox (the template's, which compatibility
	// required the request's to be) before any process arrives.
	deviceRules := func(paths map[string]string, migrated map[string]bool) error {
		if !migrated["devices"] && !(migrated[""] && unified()) {
			return nil
		}
		rules, err := st.deviceRules()
		if err != nil {
			return err
		}
		if err := applyDeviceRules(paths, rules); err != nil {
			return fmt.Errorf("device rules: %w", err)
		}
		return nil
	}
	paths, _, mt, err := moveCgroups(sb.cgroupPaths, oldPath, sp.Linux.CgroupsPath, deviceRules)
	if paths != nil {
		moved = paths
	}
	if err != nil {
		return fmt.Errorf("adopt: move cgroup: %w", err)
	}
	sb.cgroupPaths = paths
	tMove = time.Since(began)
	if err := applyResources(sp.Linux.CgroupsPath, sp.Linux.Resources); err != nil {
		return fmt.Errorf("adopt: resources: %w", err)
	}
	tRes = time.Since(began) - tMove
	if err := renameRuncContainer(s.Root, sb.ID, req.ContainerID, st, paths, sp.Linux.CgroupsPath, req.Bundle, sp); err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	renamed = true
	tRename = time.Since(began) - tMove - tRes
	if hasNamespace(sp, specs.UTSNamespace) && sp.Hostname != sb.Template.Spec.Hostname {
		// No hostname requested: a cold start's new UTS namespace has the runtime's.
		name := sp.Hostname
		if name == "" {
			if name, err = os.Hostname(); err != nil {
				return fmt.Errorf("adopt: hostname: %w", err)
			}
		}
		if err := setHostname(sb.Pid, name); err != nil {
			return fmt.Errorf("adopt: hostname: %w", err)
		}
	}
	if err := rebindMounts(sb.Pid, req.Rebind); err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	if err := sb.ownStdio(req.Stdout); err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	// As runc gives them: the container is still being created.
	state := specs.State{Version: specs.Version, ID: req.ContainerID, Status: specs.StateCreating, Pid: sb.Pid, Bundle: req.Bundle, Annotations: sp.Annotations}
	if sp.Hooks != nil {
		//nolint:staticcheck // runc still runs prestart hooks; so does warm
		for _, h := range append(append([]specs.Hook{}, sp.Hooks.Prestart...), sp.Hooks.CreateRuntime...) {
			if err := runHook(ctx, h, state); err != nil {
				return fmt.Errorf("adopt: createRuntime hook %s: %w", h.Path, err)
			}
		}
	}
	// runc runs the poststart hooks once the container's process exists, at create,
	// with status created; one that fails fails the create.
	if sp.Hooks != nil && len(sp.Hooks.Poststart) > 0 {
		state.Status = specs.StateCreated
		for _, h := range sp.Hooks.Poststart {
			if err := runHook(ctx, h, state); err != nil {
				return fmt.Errorf("adopt: poststart hook %s: %w", h.Path, err)
			}
		}
	}
	tHooks = time.Since(began) - tMove - tRes - tRename
	sb.splice(req)
	sb.mu.Lock()
	sb.ContainerID = req.ContainerID
	sb.mu.Unlock()
	return nil
}

func cgroupsPathOf(sp *specs.Spec) string {
	if sp.Linux == nil {
		return ""
	}
	return sp.Linux.CgroupsPath
}

func hasNamespace(sp *specs.Spec, t specs.LinuxNamespaceType) bool {
	for _, ns := range sp.Linux.Namespaces {
		if ns.Type == t {
			return true
		}
	}
	return false
}

// ownStdio gives the sandbox's stdio pipes the owner of the container's (like, the
// pipes the shim made for runc): containerd's IoUid and IoGid, which ctr run --uidmap
// and CRI set for a container in a user namespace so that its root can reopen
// /dev/stdout. The sandbox's were made by the pool, root's.
func (sb *Sandbox) ownStdio(like *os.File) error {
	fi, err := like.Stat()
	if err != nil {
		return fmt.Errorf("stdio owner: %w", err)
	}
	want, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || fi.Mode()&os.ModeNamedPipe == 0 {
		return nil // not the shim's pipe (runc's /dev/null): nothing to follow
	}
	if int(want.Uid) == os.Geteuid() && int(want.Gid) == os.Getegid() {
		return nil // the sandbox's are the shim's too (the pool made them)
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	for _, f := range []*os.File{sb.stdin, sb.stdout, sb.stderr} {
		if f == nil {
			continue
		}
		// Either end of a pipe changes the one inode both share.
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("stdio owner: %w", err)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == want.Uid && st.Gid == want.Gid {
			continue
		}
		if err := f.Chown(int(want.Uid), int(want.Gid)); err != nil {
			return fmt.Errorf("stdio owner: %w", err)
		}
	}
	return nil
}

// splice connects the sandbox's pipes to the container's stdio. Output written before
// adoption was drained and discarded.
func (sb *Sandbox) splice(req AdoptRequest) {
	sb.stopDrain()
	sb.mu.Lock()
	defer sb.mu.Unlock()
	id := req.ContainerID
	done := make(chan struct{})
	pump := func(name string, dst *os.File, src *os.File) {
		n, err := io.Copy(dst, src)
		dst.Close()
		src.Close()
		if sb.pumping.Add(-1) == 0 {
			close(done)
		}
		if log.GetLevel() >= log.DebugLevel {
			log.L.WithField("container", id).WithField("bytes", n).WithError(err).Debug("sandbox " + name + " copied")
		}
	}
	// The watches see the container's pipes after the pumps closed their ends: the
	// container's exit waits until the shim's copy to containerd's FIFOs read them.
	sb.outWatch = &pipewatch.Watch{}
	sb.outWatch.AddFile(req.Stdout)
	sb.outWatch.AddFile(req.Stderr)
	// runc's stdio reaches the shim in blocking mode; a pump blocked on a full pipe
	// (nobody reads the container's output) could then never be stopped.
	stdout, stderr := pollable(req.Stdout), pollable(req.Stderr)
	sb.pumpFiles = []*os.File{stdout, stderr, sb.stdout, sb.stderr}
	sb.pumpsDone = done
	sb.pumping.Store(2)
	go pump("stdout", stdout, sb.stdout)
	go pump("stderr", stderr, sb.stderr)
	if req.Stdin != nil {
		in := sb.stdin
		go func() {
			_, _ = io.Copy(in, req.Stdin)
			in.Close()
			req.Stdin.Close()
		}()
	} else {
		sb.stdin.Close()
	}
	// The pipes now belong to the copies.
	sb.stdin, sb.stdout, sb.stderr = nil, nil, nil
}

// pollable returns f as a file the Go runtime polls (a duplicate in non-blocking mode,
// so that closing it stops a copy blocked on it), closing f; f itself if that fails.
func pollable(f *os.File) *os.File {
	rc, err := f.SyscallConn()
	if err != nil {
		return f
	}
	nfd := -1
	_ = rc.Control(func(fd uintptr) {
		if d, err := unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); err == nil {
			if unix.SetNonblock(d, true) == nil {
				nfd = d
			} else {
				unix.Close(d)
			}
		}
	})
	if nfd < 0 {
		return f
	}
	f.Close()
	return os.NewFile(uintptr(nfd), f.Name())
}

// stopPumps waits for the output pumps to end, at most grace: then (nobody reads the
// container's output and a pipe is full) it closes their files, which stops them.
func (sb *Sandbox) stopPumps(grace time.Duration) {
	sb.mu.Lock()
	done, files := sb.pumpsDone, sb.pumpFiles
	sb.mu.Unlock()
	if done == nil {
		return // never adopted
	}
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	closeAll(files...)
	<-done
}

// OutputPending reports whether output of an adopted sandbox is still on its way to the
// container's stdio: a pump has not reached the end of the sandbox's output (its
// processes are not all gone), or the shim's copy of the container's pipes has not read
// all the pumps wrote.
func (sb *Sandbox) OutputPending() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	select {
	case <-sb.pumpsDone:
	default:
		return true
	}
	return sb.outWatch.Unread() > 0
}

// Thaw starts an adopted sandbox: it thaws its cgroup. (Its poststart hooks ran at
// adoption, as runc runs them at create.)
func (s *Sandboxes) Thaw(ctx context.Context, sb *Sandbox) error {
	sb.mu.Lock()
	if sb.started {
		sb.mu.Unlock()
		return nil
	}
	sb.mu.Unlock()
	if err := freezeDir(sb.cgroupPaths, false); err != nil {
		// Not started: a kill or delete thaws it again.
		return fmt.Errorf("thaw: %w", err)
	}
	sb.mu.Lock()
	sb.started = true
	sb.mu.Unlock()
	return nil
}

// ErrNotRunning is KillUnstarted's error for a sandbox whose process is gone (its text
// is runc's, which containerd reads as "process already finished").
var ErrNotRunning = errors.New("container not running")

// KillUnstarted carries out a kill of an adopted sandbox that was never started as it
// goes on a cold container that was never started. There the process is runc init,
// waiting to run the application; Go's runtime in it ends it on SIGHUP, SIGINT, SIGTERM,
// the core-dumping signals and SIGKILL, and catches and ignores the others. So such a
// signal kills every process of the sandbox (SIGKILL while it is frozen, then a thaw: no
// more of the application's code runs; the exit is reported with runc init's status,
// UnstartedExitStatus), 0 only checks that the sandbox lives, and any other signal leaves it
// frozen until its Start. (A thaw before the signal let the application run in between:
// enough to read an EOF on stdin and exit 0 before a SIGKILL came.) A sandbox whose
// process is gone is thawed, as runc deletes no paused container, and gets runc's
// "container not running".
func (s *Sandboxes) KillUnstarted(ctx context.Context, sb *Sandbox, sig unix.Signal) error {
	if procfs.Dead(sb.Pid) {
		_ = s.Thaw(ctx, sb)
		return ErrNotRunning
	}
	if !EndsUnstarted(sig) {
		return nil
	}
	// The cgroups' processes, sb.Pid among them while it lives (by pid alone a process
	// that died meanwhile and was reaped could be another one by now).
	pids, err := sb.processes()
	if err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill %d: %w", pid, err)
		}
	}
	return s.Thaw(ctx, sb)
}

// processes lists the processes of the sandbox's cgroup and of the cgroups below it.
func (sb *Sandbox) processes() ([]int, error) {
	sb.mu.Lock()
	paths := sb.cgroupPaths
	sb.mu.Unlock()
	return procsUnder(pickProcsDir(paths))
}

// Gone reports whether the sandbox's process has exited (a zombie, or reaped) or its
// cgroups hold no process any more.
func (sb *Sandbox) Gone() bool {
	if procfs.Dead(sb.Pid) {
		return true
	}
	pids, err := sb.processes()
	return err == nil && len(pids) == 0
}

// UnstartedExitStatus is the exit status a cold container that was never started reports
// after a kill with sig, given the status its adopted sandbox's process got: runc init's
// Go runtime exits with 2 on every signal that ends it but SIGKILL, while KillUnstarted
// ends a sandbox with SIGKILL (137).
func UnstartedExitStatus(sig unix.Signal, status int) int {
	if sig != unix.SIGKILL && EndsUnstarted(sig) && status == 128+int(unix.SIGKILL) {
		return 2
	}
	return status
}

// EndsUnstarted reports whether a kill with sig ends a container that was never started:
// whether it ends runc init while it waits to run the container's application (Go's
// default handling of signals, and SIGKILL). See KillUnstarted.
func EndsUnstarted(sig unix.Signal) bool {
	switch sig {
	case unix.SIGKILL, unix.SIGHUP, unix.SIGINT, unix.SIGTERM,
		unix.SIGQUIT, unix.SIGILL, unix.SIGTRAP, unix.SIGABRT, unix.SIGBUS, unix.SIGFPE,
		unix.SIGSEGV, unix.SIGSTKFLT, unix.SIGSYS:
		return true
	}
	return false
}

// Adopted reports whether a container took the sandbox over.
func (sb *Sandbox) Adopted() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.ContainerID != ""
}

// Started reports whether an adopted sandbox was thawed.
func (sb *Sandbox) Started() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.started
}

func applyResources(path string, res *specs.LinuxResources) error {
	// The sandbox was restored without limits (sandboxSpec) and its devices are the
	// template's: a request with no limit has nothing to apply, and the hit spares the
	// cgroupfs walks (which wait on the locks a refill's restore holds).
	if !hasLimits(res) {
		return nil
	}
	// As runc does, a zero real-time period or runtime means "not set".
	r := *res
	if r.CPU != nil {
		cpu := *r.CPU
		if cpu.RealtimePeriod != nil && *cpu.RealtimePeriod == 0 {
			cpu.RealtimePeriod = nil
		}
		if cpu.RealtimeRuntime != nil && *cpu.RealtimeRuntime == 0 {
			cpu.RealtimeRuntime = nil
		}
		r.CPU = &cpu
	}
	res = &r
	if unified() {
		m, err := cgroupsv2.Load(path)
		if err != nil {
			return err
		}
		r2, unlimited := toResources2(res)
		if err := m.Update(r2); err != nil {
			return err
		}
		for _, f := range unlimited {
			if err := os.WriteFile(filepath.Join(cgroupV2Root, path, f), []byte("max"), 0); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
		}
		return nil
	}
	// Devices are already the template's (and compatibility required the same).
	r.Devices = nil
	return update1(path, &r)
}

// toResources2 is cgroupsv2.ToResources as runc converts: a quota without a period gets
// runc's default period (ToResources wrote no cpu.max: no limit), and a memory limit,
// swap or pids limit of -1 is "max" (ToResources gave the kernel "-1", or a negative
// swap from -1 less the limit), returned as the files to write "max" into.
func toResources2(res *specs.LinuxResources) (*cgroupsv2.Resources, []string) {
	r := *res
	var unlimited []string
	if c := r.CPU; c != nil && c.Quota != nil && c.Period == nil {
		cpu := *c
		period := uint64(100000)
		cpu.Period = &period
		r.CPU = &cpu
	}
	if m := r.Memory; m != nil {
		mem := *m
		if mem.Limit != nil && *mem.Limit == -1 {
			mem.Limit = nil
			unlimited = append(unlimited, "memory.max")
		}
		if mem.Swap != nil && *mem.Swap == -1 {
			mem.Swap = nil
			unlimited = append(unlimited, "memory.swap.max")
		}
		r.Memory = &mem
	}
	if p := r.Pids; p != nil && p.Limit != nil && *p.Limit <= 0 {
		r.Pids = nil
		unlimited = append(unlimited, "pids.max")
	}
	return cgroupsv2.ToResources(&r), unlimited
}

// applyDeviceRules gives the container's new cgroup the device rules: on cgroup v2 an
// eBPF device program, as runc attaches; on v1 the rules written in order to
// devices.deny and devices.allow (the first, from runc, denies everything).
func applyDeviceRules(paths map[string]string, rules []specs.LinuxDeviceCgroup) error {
	if len(rules) == 0 {
		return errors.New("runc's state has no device rules")
	}
	if unified() {
		insts, license, err := cgroupsv2.DeviceFilter(wildcards(rules))
		if err != nil {
			return err
		}
		dir := paths[""]
		fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", dir, err)
		}
		defer unix.Close(fd)
		if _, err := cgroupsv2.LoadAttachCgroupDeviceFilter(insts, license, fd); err != nil {
			return fmt.Errorf("attach device filter to %s: %w", dir, err)
		}
		return nil
	}
	dir, ok := paths["devices"]
	if !ok {
		return errors.New("no devices cgroup")
	}
	for _, r := range rules {
		file := "devices.deny"
		if r.Allow {
			file = "devices.allow"
		}
		if err := os.WriteFile(filepath.Join(dir, file), []byte(deviceRuleLine(r)), 0); err != nil {
			return fmt.Errorf("%s %q: %w", filepath.Join(dir, file), deviceRuleLine(r), err)
		}
	}
	return nil
}

// wildcards returns rules with an unset major or minor given as -1 (any), which is how
// cgroup2's DeviceFilter reads it: it dereferences both of every rule.
func wildcards(rules []specs.LinuxDeviceCgroup) []specs.LinuxDeviceCgroup {
	out := make([]specs.LinuxDeviceCgroup, len(rules))
	wild := int64(-1)
	for i, r := range rules {
		if r.Major == nil {
			r.Major = &wild
		}
		if r.Minor == nil {
			r.Minor = &wild
		}
		out[i] = r
	}
	return out
}

// deviceRuleLine is a rule as cgroup v1's devices files take it: "c 1:3 rwm", "a".
func deviceRuleLine(r specs.LinuxDeviceCgroup) string {
	if r.Type == "a" || r.Type == "" {
		return "a"
	}
	num := func(n *int64) string {
		if n == nil || *n < 0 {
			return "*"
		}
		return strconv.FormatInt(*n, 10)
	}
	access := r.Access
	if access == "" {
		access = "rwm"
	}
	return r.Type + " " + num(r.Major) + ":" + num(r.Minor) + " " + access
}

// runHook runs an OCI hook with the container state on its stdin, as runc does.
func runHook(ctx context.Context, h specs.Hook, state specs.State) error {
	data, err := json.Marshal(state)
	if err != nil {
		return err
	}
	if h.Timeout != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*h.Timeout)*time.Second)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, h.Path)
	if len(h.Args) > 0 {
		cmd.Args = h.Args
	}
	cmd.Env = h.Env
	cmd.Stdin = bytes.NewReader(data)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

// hasLimits reports whether res sets anything but device rules.
func hasLimits(res *specs.LinuxResources) bool {
	if res == nil {
		return false
	}
	r := *res
	r.Devices = nil
	return !reflect.DeepEqual(r, specs.LinuxResources{})
}
