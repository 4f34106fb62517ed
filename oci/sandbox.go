package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/warmshim/warm/internal/pipewatch"
	"github.com/warmshim/warm/internal/procfs"
	"github.com/warmshim/warm/internal/refillgate"
	"github.com/warmshim/warm/oci/wrap"
	"github.com/warmshim/warm/store"
)

// Rootfs prepares and removes a pooled sandbox's root filesystem. The shim implements
// it with containerd's snapshot service under a lease.
type Rootfs interface {
	Prepare(ctx context.Context, id string, t *store.Template) ([]mount.Mount, error)
	Remove(ctx context.Context, id string) error
}

// Sandboxes restores, adopts and destroys pooled sandboxes with runc and CRIU. It
// implements pool.Runtime.
type Sandboxes struct {
	// Runc is the runc binary; Root is runc's --root for the namespace (the same one
	// the namespace's containers use, so an adopted sandbox is an ordinary container).
	Runc, Root string
	// Dir holds one bundle directory per sandbox.
	Dir string
	// CgroupParent is the cgroup under which pooled sandboxes wait when their template's
	// own parent cannot be used (a systemd path).
	CgroupParent string
	Rootfs       Rootfs
	// Gate, if set, pauses the restores while pool hits are served (refills' Sandboxes).
	Gate *refillgate.Gate
	// MergeRunc, if set, is a runc wrapper that knows wrap.FlagMemoryMerge (the shim's own
	// binary): the restores of the templates for which Merge is true run through it, so
	// that runc, CRIU and the restored tasks have kernel same-page merging (KSM) on.
	MergeRunc string
	Merge     func(t *store.Template) bool
	// Images, if set, keeps the template's memory images cached in single pages before
	// each restore (refills' Sandboxes; internal/pagecache says why).
	Images ImageCache
}

// ImageCache keeps the pages images of a template's image directory in the page cache
// in a form CRIU's restore can be preempted in (pagecache.Keeper).
type ImageCache interface {
	Keep(dir string) (primed, filled int, err error)
}

// Sandbox is one pooled sandbox: a restored, frozen runc container with the stdio
// pipes the shim kept.
type Sandbox struct {
	ID, Bundle string
	Pid        int
	Template   *store.Template

	mu          sync.Mutex
	stdin       *os.File // write end; guarded by mu
	stdout      *os.File // read end; guarded by mu
	stderr      *os.File // read end; guarded by mu
	drainDone   chan struct{}
	drained     atomic.Int64 // bytes the drain read (output before adoption)
	mounted     bool
	cgroupPaths map[string]string
	// restoredIn is cgroupPaths as the restore left them, never changed after: what
	// MergedBytes reads while an adoption may be moving the sandbox.
	restoredIn map[string]string
	// mergeable: restored with KSM merging on (Sandboxes.Merge); set by the restore.
	mergeable bool
	state     *keptState // runc's state after the restore, for the adoption
	// ContainerID is set once adopted: the runc container then belongs to containerd's
	// container and is removed by its Delete.
	ContainerID string           // guarded by mu
	started     bool             // guarded by mu
	pumping     atomic.Int32     // adoption's output pumps still copying
	pumpsDone   chan struct{}    // closed by the last pump to end; nil before adoption; guarded by mu
	outWatch    *pipewatch.Watch // the container's output pipes, the pumps' destinations; guarded by mu
	pumpFiles   []*os.File       // the pumps' files, closed to stop them; guarded by mu
}

func (s *Sandboxes) runc(bundle string) *runc.Runc {
	return &runc.Runc{Command: s.Runc, Root: s.Root, Log: filepath.Join(bundle, "log.json"), LogFormat: runc.JSON}
}

// pipeIO gives runc restore the sandbox's ends of three pipes.
type pipeIO struct{ in, out, err *os.File }

func (p *pipeIO) Stdin() io.WriteCloser  { return nil }
func (p *pipeIO) Stdout() io.ReadCloser  { return nil }
func (p *pipeIO) Stderr() io.ReadCloser  { return nil }
func (p *pipeIO) Close() error           { return nil }
func (p *pipeIO) Set(cmd *exec.Cmd)      { cmd.Stdin, cmd.Stdout, cmd.Stderr = p.in, p.out, p.err }
func (p *pipeIO) CloseAfterStart() error { return closeAll(p.in, p.out, p.err) }

func closeAll(fs ...*os.File) error {
	var errs []error
	for _, f := range fs {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}

// sandboxSpec is the template's spec made to run as a pooled sandbox: its own rootfs and
// cgroup, no hooks (the requesting container's hooks run at adoption).
func sandboxSpec(t *store.Template, bundle, cgroupsPath string) (*specs.Spec, error) {
	data, err := json.Marshal(t.Spec)
	if err != nil {
		return nil, err
	}
	var sp specs.Spec
	if err := json.Unmarshal(data, &sp); err != nil {
		return nil, err
	}
	if sp.Root == nil || sp.Linux == nil {
		return nil, errors.New("template spec has no root or linux section")
	}
	if err := poolable(&sp); err != nil {
		return nil, err
	}
	sp.Root.Path = filepath.Join(bundle, "rootfs")
	sp.Linux.CgroupsPath = cgroupsPath
	sp.Hooks = nil
	// No resource limits: adoption applies the request's, and on cgroup v1 the sandbox's
	// own cgroup (renamed) becomes the container's, so a limit of the template's would stay
	// with a request that asks for none. The device rules stay (requests must have the
	// template's).
	if r := sp.Linux.Resources; r != nil {
		sp.Linux.Resources = &specs.LinuxResources{Devices: r.Devices}
	}
	return &sp, nil
}

// Poolable implements pool.Runtime: a sandbox can be restored ahead of a request only
// into namespaces of its own.
func (s *Sandboxes) Poolable(t *store.Template) error {
	if t == nil || t.Spec == nil || t.Spec.Linux == nil {
		return errors.New("template has no linux spec")
	}
	return poolable(t.Spec)
}

func poolable(sp *specs.Spec) error {
	for _, ns := range sp.Linux.Namespaces {
		if ns.Path != "" {
			return fmt.Errorf("template joined an existing %s namespace (%s, e.g. its pod's): a sandbox restored ahead of a request cannot join the request's", ns.Type, ns.Path)
		}
	}
	return nil
}

// cgroupParentOf is where a template's sandboxes wait: beside the template's own
// container (e.g. /<namespace>), so that adopting one into a sibling container cgroup is
// a rename; or under CgroupParent.
func (s *Sandboxes) cgroupParentOf(t *store.Template) string {
	if t.Spec != nil && t.Spec.Linux != nil {
		if p := t.Spec.Linux.CgroupsPath; strings.HasPrefix(p, "/") && !strings.Contains(p, ":") && filepath.Dir(p) != "/" {
			return filepath.Dir(p)
		}
	}
	return s.CgroupParent
}

// Restore implements pool.Runtime: a new bundle, a rootfs from the template's image, a
// CRIU restore through runc with pipes the shim keeps, then freeze.
func (s *Sandboxes) Restore(ctx context.Context, t *store.Template, id string) (_ any, _ int64, retErr error) {
	bundle := filepath.Join(s.Dir, id)
	sb := &Sandbox{ID: id, Bundle: bundle, Template: t}
	defer func() {
		if retErr != nil {
			_ = s.Destroy(context.WithoutCancel(ctx), sb)
		}
	}()
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o700); err != nil {
		return sb, 0, err
	}
	cgroupsPath := filepath.Join(s.cgroupParentOf(t), id)
	sp, err := sandboxSpec(t, bundle, cgroupsPath)
	if err != nil {
		return sb, 0, err
	}
	data, err := json.Marshal(sp)
	if err != nil {
		return sb, 0, err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600); err != nil {
		return sb, 0, err
	}
	mounts, err := s.Rootfs.Prepare(ctx, id, t)
	if err != nil {
		return sb, 0, fmt.Errorf("prepare rootfs: %w", err)
	}
	if err := mount.All(mounts, sp.Root.Path); err != nil {
		_ = s.Rootfs.Remove(ctx, id)
		return sb, 0, fmt.Errorf("mount rootfs: %w", err)
	}
	sb.mounted = true

	inR, inW, err := os.Pipe()
	if err != nil {
		return sb, 0, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW)
		return sb, 0, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW, outR, outW)
		return sb, 0, err
	}
	sb.stdin, sb.stdout, sb.stderr = inW, outR, errR
	pio := &pipeIO{in: inR, out: outW, err: errW}
	pidFile := filepath.Join(bundle, "pid")
	leave := func() {}
	if s.Gate != nil {
		leave = s.Gate.Enter(id, NewRestoreFreezer(cgroupsPath))
	}
	r := s.runc(bundle)
	if s.MergeRunc != "" && s.Merge != nil && s.Merge(t) {
		r.Command, r.ExtraArgs = s.MergeRunc, []string{wrap.FlagMemoryMerge}
		sb.mergeable = true
	}
	err = lowPriority(func() error {
		if s.Images != nil {
			// At the restore's priority: a prime reads the images again.
			began := time.Now()
			if primed, filled, err := s.Images.Keep(t.Images); err != nil {
				log.G(ctx).WithError(err).Warn("template images could not be cached in single pages: " +
					"this template's restores may hold a CPU for tens of milliseconds at a time")
			} else if primed+filled > 0 {
				log.G(ctx).WithField("primed", primed).WithField("filled", filled).WithField("took", time.Since(began)).
					Debug("template images cached in single pages")
			}
		}
		_, err := r.Restore(ctx, id, bundle, &runc.RestoreOpts{
			CheckpointOpts: runc.CheckpointOpts{ImagePath: t.Images, WorkDir: filepath.Join(bundle, "work")},
			IO:             pio,
			PidFile:        pidFile,
			Detach:         true,
			NoSubreaper:    true,
		})
		return err
	})
	// From here the gate leaves the sandbox alone (if it is paused now, it stays frozen).
	leave()
	pio.CloseAfterStart()
	if err != nil {
		return sb, 0, fmt.Errorf("runc restore: %w (runc: %s; CRIU: %s)", err, RuncErrors(filepath.Join(bundle, "log.json")),
			CriuErrors(filepath.Join(bundle, "work", "restore.log")))
	}
	pid, err := runc.ReadPidFile(pidFile)
	if err != nil {
		return sb, 0, err
	}
	sb.Pid = pid
	// Drain output until adoption so the application never blocks on a full pipe; what
	// it writes before adoption is not the requester's and never reaches it.
	sb.drainDone = make(chan struct{})
	go sb.drain()
	// Freeze at once, through the cgroup (a runc pause is another process to start, and
	// the restored application runs until the freeze: CRIU cannot restore it frozen).
	if sb.state, err = keepRuncState(filepath.Join(s.Root, id)); err != nil {
		return sb, 0, err
	}
	if sb.cgroupPaths, err = sb.state.state.cgroupPaths(); err != nil {
		return sb, 0, err
	}
	sb.restoredIn = sb.cgroupPaths
	if err := freezeDir(sb.cgroupPaths, true); err != nil {
		return sb, 0, fmt.Errorf("freeze: %w", err)
	}
	return sb, cgroupMemory(sb.cgroupPaths, pid), nil
}

// ErrRanBeforeFreeze is a restored sandbox that ran past its template's state before the
// shim froze it.
var ErrRanBeforeFreeze = errors.New("sandbox ran before it was frozen")

// CheckFresh fails with ErrRanBeforeFreeze if the sandbox wrote output between its
// restore and its freeze: its application has run past the template's state (seen: one
// whose timer had run out printed its result and was about to exit, and the hit it
// served printed nothing). A pool must not serve it; what a new container is given
// before adoption never reaches it, so that output would be lost. (A recovery standby
// may keep it: its output is its own container's, already printed by the task it
// replaces, and it is as if restored from a checkpoint taken a moment later.) Call it on
// a frozen sandbox that no container adopted yet: it counts what the drain read and
// what waits in the pipes, with the drain stopped so that no read is in flight.
func (sb *Sandbox) CheckFresh() error {
	sb.stopDrain()
	n := sb.drained.Load() + int64(pipewatch.UnreadIn(sb.stdout)+pipewatch.UnreadIn(sb.stderr))
	sb.drainDone = make(chan struct{})
	go sb.drain()
	if n > 0 {
		return fmt.Errorf("%w: it wrote %d bytes between its restore and its freeze", ErrRanBeforeFreeze, n)
	}
	return nil
}

// drain discards the sandbox's output until stopDrain sets a read deadline.
func (sb *Sandbox) drain() {
	defer close(sb.drainDone)
	var wg sync.WaitGroup
	for _, f := range []*os.File{sb.stdout, sb.stderr} {
		wg.Add(1)
		go func(f *os.File) {
			defer wg.Done()
			buf := make([]byte, 4096)
			for {
				n, err := f.Read(buf)
				sb.drained.Add(int64(n))
				if err != nil {
					return
				}
			}
		}(f)
	}
	wg.Wait()
}

func (sb *Sandbox) stopDrain() {
	if sb.drainDone == nil {
		return
	}
	now := time.Now()
	_ = sb.stdout.SetReadDeadline(now)
	_ = sb.stderr.SetReadDeadline(now)
	<-sb.drainDone
	_ = sb.stdout.SetReadDeadline(time.Time{})
	_ = sb.stderr.SetReadDeadline(time.Time{})
	sb.drainDone = nil
}

// Memory is what a process tree costs in memory, in bytes: the pages private to pid and
// its descendants (Private_Clean and Private_Dirty of /proc/PID/smaps_rollup), which is
// what each sandbox restored from a template adds. Pages shared with others (the
// template's libraries in the page cache, shared with its other sandboxes) are not
// counted; RSS would count them once per sandbox. Where pid's smaps_rollup cannot be
// read, its resident memory stands in for its own pages (0 if unknown).
func Memory(pid int) int64 {
	return privateOf(pid, procfs.Descendants(pid))
}

// cgroupMemory is Memory of a container's processes as its cgroup lists them (the
// freezer's cgroup.procs, and its sub-cgroups' if the container made any), without
// walking /proc, whose cost grows with every process on the node; Memory(pid) where the
// cgroup cannot be read.
func cgroupMemory(paths map[string]string, pid int) int64 {
	others, err := otherPids(paths, pid)
	if err != nil {
		return Memory(pid)
	}
	return privateOf(pid, others)
}

// otherPids lists the processes of a sandbox's cgroups (with their children's) other
// than pid.
func otherPids(paths map[string]string, pid int) ([]int, error) {
	dir, err := freezerDir(paths)
	if err != nil {
		return nil, err
	}
	var others []int
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil && n != pid {
				others = append(others, n)
			}
		}
		return nil
	})
	return others, err
}

// MergedBytes is how much of the memory of a frozen sandbox's processes the kernel
// merged (KSM: /proc/PID/ksm_merging_pages, Linux 5.19+): 0 when none, or where it
// cannot be read. Safe beside an adoption (which moves the sandbox's cgroups: then only
// its init is counted). A sandbox not restored mergeable reads nothing.
func (sb *Sandbox) MergedBytes() int64 {
	if !sb.mergeable {
		return 0
	}
	pids, _ := otherPids(sb.restoredIn, sb.Pid)
	var pages int64
	for _, p := range append(pids, sb.Pid) {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/ksm_merging_pages")
		if n, perr := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64); err == nil && perr == nil {
			pages += n
		}
	}
	return pages * int64(os.Getpagesize())
}

// privateOf is the private memory of pid and others; pid's resident memory stands in
// for its own where smaps_rollup cannot be read.
func privateOf(pid int, others []int) int64 {
	total, ok := privateMemory(pid)
	if !ok {
		total = rss(pid)
	}
	for _, p := range others {
		n, _ := privateMemory(p)
		total += n
	}
	return total
}

func privateMemory(pid int) (int64, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0, false
	}
	var total int64
	found := false
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "Private_Clean:") || strings.HasPrefix(l, "Private_Dirty:") {
			if f := strings.Fields(l); len(f) >= 2 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				total += n << 10
				found = true
			}
		}
	}
	return total, found
}

// rss is the resident memory of a process in bytes (0 if unknown).
func rss(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

// pumpsGrace is how long Destroy lets an adopted sandbox's output pumps finish (the
// container is gone; a pump still running is stuck on output nobody reads).
const pumpsGrace = 500 * time.Millisecond

// Destroy implements pool.Runtime. A sandbox that was never adopted is removed from
// runc (killing it); an adopted one belongs to its container, whose Delete removed it.
func (s *Sandboxes) Destroy(ctx context.Context, h any) error {
	sb, ok := h.(*Sandbox)
	if !ok || sb == nil {
		return nil
	}
	var errs []error
	sb.mu.Lock()
	adopted := sb.ContainerID != ""
	sb.mu.Unlock()
	if !adopted {
		if _, err := os.Stat(filepath.Join(s.Root, sb.ID)); err == nil {
			if err := s.runc(sb.Bundle).Delete(ctx, sb.ID, &runc.DeleteOpts{Force: true}); err != nil {
				errs = append(errs, fmt.Errorf("runc delete: %w", err))
			}
		}
	}
	if sb.drainDone != nil {
		sb.stopDrain()
	}
	sb.stopPumps(pumpsGrace)
	sb.mu.Lock()
	sb.pumpFiles = nil
	closeAll(sb.stdin, sb.stdout, sb.stderr)
	sb.stdin, sb.stdout, sb.stderr = nil, nil, nil
	sb.outWatch.Close()
	sb.outWatch = nil
	sb.mu.Unlock()
	rootfs := filepath.Join(sb.Bundle, "rootfs")
	if sb.mounted {
		if err := mount.UnmountAll(rootfs, 0); err != nil {
			errs = append(errs, fmt.Errorf("unmount rootfs: %w", err))
		}
		sb.mounted = false
	}
	if s.Rootfs != nil {
		if err := s.Rootfs.Remove(ctx, sb.ID); err != nil {
			errs = append(errs, fmt.Errorf("remove rootfs snapshot: %w", err))
		}
	}
	// Never remove through a mount: a standby's rootfs is a live container's.
	if still, _ := procfs.IsMountPoint(rootfs); still {
		errs = append(errs, fmt.Errorf("rootfs %s still mounted: bundle kept", rootfs))
	} else if err := os.RemoveAll(sb.Bundle); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		log.G(ctx).WithError(err).WithField("sandbox", sb.ID).Warn("destroy sandbox")
		return err
	}
	return nil
}

// Abandon removes a sandbox adopted by a container whose Create then failed from runc:
// the container never came to exist, so no Delete removes it under the container's id
// (and a cold retry of the same id needs the id free). Its processes are killed and its
// cgroups removed; Destroy removes the rest. A sandbox never adopted is left to Destroy.
func (s *Sandboxes) Abandon(ctx context.Context, sb *Sandbox) {
	sb.mu.Lock()
	id, paths := sb.ContainerID, sb.cgroupPaths
	sb.mu.Unlock()
	if id == "" {
		return
	}
	s.discard(ctx, sb.Bundle, id, paths)
}

// discard kills the processes in the cgroups paths (thawed, or SIGKILL stays pending),
// has runc forget container id, and removes the cgroups.
func (s *Sandboxes) discard(ctx context.Context, bundle, id string, paths map[string]string) {
	if paths != nil {
		killCgroup(paths)
	}
	if err := s.runc(bundle).Delete(context.WithoutCancel(ctx), id, &runc.DeleteOpts{Force: true}); err != nil && !strings.Contains(err.Error(), "does not exist") {
		log.G(ctx).WithError(err).WithField("container", id).Warn("discard sandbox: runc delete")
	}
	for _, p := range paths {
		removeCgroupTree(p)
	}
}

// Cleanup removes what a previous shim left in Dir (it died holding a pool): its runc
// containers, mounts and snapshots.
func (s *Sandboxes) Cleanup(ctx context.Context) {
	entries, _ := os.ReadDir(s.Dir)
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		sb := &Sandbox{ID: e.Name(), Bundle: filepath.Join(s.Dir, e.Name()), mounted: true}
		log.G(ctx).WithField("sandbox", sb.ID).Info("removing a sandbox left by a previous shim")
		_ = s.Destroy(ctx, sb)
	}
}

// RemoveCgroupParent removes the (empty) cgroup under which sandboxes waited, in every
// hierarchy; called when the shim's pools are closed.
func (s *Sandboxes) RemoveCgroupParent() {
	for _, p := range hostCgroupPaths(s.CgroupParent) {
		removeCgroup(p)
		// The shared /warm-pool parent goes when the last namespace's does.
		_ = os.Remove(filepath.Dir(p))
	}
}

// DeleteContainer removes a container from runc. A stopped one is deleted at once:
// runc's --force always sleeps 100 ms after its SIGKILL before it looks again, so it is
// used only when a plain delete refuses (the container still runs, or is paused).
// A container runc does not know (any more) is not an error.
func DeleteContainer(ctx context.Context, r *runc.Runc, id string) error {
	// runc does nothing for a container whose state directory is gone: spare starting it
	// (the delete action containerd runs after every deleted container finds it so).
	if r.Root != "" {
		if _, err := os.Stat(filepath.Join(r.Root, id)); errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	err := r.Delete(ctx, id, nil)
	if err == nil || strings.Contains(err.Error(), "does not exist") {
		return nil
	}
	return r.Delete(ctx, id, &runc.DeleteOpts{Force: true})
}

// BindRootfs is the Rootfs of a standby sandbox: a bind mount of the root filesystem of
// the (running) container it stands by for. Nothing is created or removed.
type BindRootfs struct{ Source string }

// Prepare returns the bind mount of Source.
func (b BindRootfs) Prepare(ctx context.Context, id string, t *store.Template) ([]mount.Mount, error) {
	if ok, err := procfs.IsMountPoint(b.Source); err != nil || !ok {
		return nil, fmt.Errorf("rootfs %s is not mounted", b.Source)
	}
	return []mount.Mount{{Type: "bind", Source: b.Source, Options: []string{"rbind", "rw"}}}, nil
}

// Remove does nothing: the root filesystem is the container's.
func (BindRootfs) Remove(context.Context, string) error { return nil }
