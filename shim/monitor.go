package shim

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"

	runcC "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/internal/pipewatch"
	"github.com/warmshim/warm/internal/procfs"
	"github.com/warmshim/warm/oci"
	"github.com/warmshim/warm/oci/wrap"
)

// monitor is go-runc's process monitor in this shim: the reaper's, except for the runc
// commands of containers served from a pool. Those name the wrapper (warm-runc) as their
// runc; create and start are carried out here, with no process at all (adopt, thaw: a
// pool hit forks nothing), and so is a kill of a never-started sandbox; every other
// command goes straight to the real runc (a delete of a never-started sandbox once it
// was killed). The wrapper binary stays the runc recorded in the bundle, for whatever
// runs runc outside this process.
type monitor struct {
	inner runcC.ProcessMonitor
	w     *warm

	mu      sync.Mutex
	running map[string]*exec.Cmd // runc checkpoint and restore commands running, by "SUB ID"; guarded by mu
	// outputs watch the output pipes of execs (`runc exec --detach`) by pid file, until
	// the service takes them (an exec can be gone from /proc before its Start returns);
	// guarded by mu
	outputs map[string]*pipewatch.Watch
}

// watchExecOutput keeps a watch on the output pipes runc exec is given.
func (m *monitor) watchExecOutput(cmd *exec.Cmd) {
	sub, _, pidFile := wrap.ParseArgs(cmd.Args)
	if sub != "exec" || pidFile == "" || !slices.Contains(cmd.Args, "--detach") {
		return
	}
	w := &pipewatch.Watch{}
	for _, out := range []io.Writer{cmd.Stdout, cmd.Stderr} {
		if f, ok := out.(*os.File); ok {
			w.AddFile(f)
		}
	}
	if w.Len() == 0 {
		return
	}
	m.mu.Lock()
	if m.outputs == nil {
		m.outputs = map[string]*pipewatch.Watch{}
	}
	m.outputs[pidFile].Close()
	m.outputs[pidFile] = w
	m.mu.Unlock()
}

// takeExecOutput returns the watch of the exec whose pid file is pidFile (nil if none).
func (m *monitor) takeExecOutput(pidFile string) *pipewatch.Watch {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.outputs[pidFile]
	delete(m.outputs, pidFile)
	return w
}

func (m *monitor) Start(cmd *exec.Cmd) (chan runcC.Exit, error) {
	if ec, ok := m.intercept(cmd); ok {
		return ec, nil
	}
	m.watchExecOutput(cmd)
	ec, err := m.inner.Start(cmd)
	m.track(cmd, err)
	return ec, err
}

func (m *monitor) StartLocked(cmd *exec.Cmd) (chan runcC.Exit, error) {
	if ec, ok := m.intercept(cmd); ok {
		return ec, nil
	}
	m.watchExecOutput(cmd)
	ec, err := m.inner.StartLocked(cmd)
	m.track(cmd, err)
	return ec, err
}

func (m *monitor) Wait(cmd *exec.Cmd, ec chan runcC.Exit) (int, error) {
	if cmd.Process == nil { // carried out here: no process was started
		e := <-ec
		return e.Status, nil
	}
	sub, id, _ := wrap.ParseArgs(cmd.Args)
	defer m.untrack(cmd, sub, id)
	status, err := m.inner.Wait(cmd, ec)
	if tracked[sub] && (err != nil || status != 0) {
		// CRIU works in runc's work directory (its image directory without one).
		work := wrap.SubFlag(cmd.Args, "--work-path")
		if work == "" {
			work = wrap.SubFlag(cmd.Args, "--image-path")
		}
		killStragglers(id, work, sub)
	}
	if sub == "restore" && (err != nil || status != 0) {
		// Killed (recovery aborts a restore that hangs, or that containerd's Kill or
		// Delete overtook), runc and CRIU leave mounts and cgroups behind.
		oci.ReleaseKilledRestore(wrap.Root(cmd.Args), id, wrap.SubFlag(cmd.Args, "--bundle"), wrap.SubFlag(cmd.Args, "--work-path"))
	}
	return status, err
}

// killStragglers kills what still works in dir (a CRIU work directory) once the runc
// command that used it (what) failed: a CRIU whose runc was killed (an abort, a timeout)
// goes on alone, and one was found left stopped for good by an abort of a checkpoint (CI:
// a criu swrk orphaned in state T after a Delete during a dump, its runc killed);
// nothing else reaps it.
func killStragglers(id, dir, what string) {
	if dir == "" {
		return
	}
	for _, pid := range procfs.InDir(dir) {
		if err := unix.Kill(pid, unix.SIGKILL); err == nil {
			log.L.WithField("container", id).WithField("pid", pid).Warn("killed a process (CRIU) left working for a failed " + what)
		}
	}
}

// tracked are the runc subcommands that can be aborted (CRIU under them can hang).
var tracked = map[string]bool{"checkpoint": true, "restore": true}

// track remembers a started runc checkpoint or restore, which abort can kill.
func (m *monitor) track(cmd *exec.Cmd, err error) {
	if err != nil || cmd.Process == nil {
		return
	}
	if sub, id, _ := wrap.ParseArgs(cmd.Args); tracked[sub] && id != "" {
		m.mu.Lock()
		if m.running == nil {
			m.running = map[string]*exec.Cmd{}
		}
		m.running[sub+" "+id] = cmd
		m.mu.Unlock()
	}
}

// untrack forgets cmd (runc subcommand sub of container id) once it has exited.
func (m *monitor) untrack(cmd *exec.Cmd, sub, id string) {
	if tracked[sub] {
		m.mu.Lock()
		if m.running[sub+" "+id] == cmd {
			delete(m.running, sub+" "+id)
		}
		m.mu.Unlock()
	}
}

// abortCheckpoint kills the runc checkpoint of container id that is running, and every
// process under it (CRIU) first: CRIU has been seen to wait forever on a task that died
// during a dump, holding runc's lock on the container. It reports whether there was one.
func (m *monitor) abortCheckpoint(id string) bool { return m.abort("checkpoint", id) }

// abortRestore kills the runc restore of container id that is running, with CRIU and
// the tasks CRIU was restoring (its children): a CRIU restore was seen to wait forever
// on a restored task that containerd had killed mid-restore.
func (m *monitor) abortRestore(id string) bool { return m.abort("restore", id) }

// checkpointing reports whether a runc checkpoint of container id is running.
func (m *monitor) checkpointing(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running["checkpoint "+id] != nil
}

func (m *monitor) abort(sub, id string) bool {
	m.mu.Lock()
	cmd := m.running[sub+" "+id]
	m.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return false
	}
	killTree(cmd.Process.Pid)
	return true
}

// killTree kills pid and every process under it. It stops them first, scanning again
// until no new one appears: a process killed while its parent forks, or whose parent
// dies first, would be reparented out of the tree and survive (a CRIU of an aborted
// checkpoint was found so, stopped and orphaned). Stopped processes cannot fork.
func killTree(pid int) {
	stopped := map[int]bool{}
	for round := 0; round < 50; round++ {
		fresh := false
		for _, p := range append([]int{pid}, procfs.Descendants(pid)...) {
			if !stopped[p] {
				_ = unix.Kill(p, unix.SIGSTOP)
				stopped[p] = true
				fresh = true
			}
		}
		if !fresh {
			break
		}
	}
	for p := range stopped {
		_ = unix.Kill(p, unix.SIGKILL)
	}
}

// intercept carries out cmd here if it is a create or start of a served container, and
// otherwise points a wrapper command at the real runc.
func (m *monitor) intercept(cmd *exec.Cmd) (chan runcC.Exit, bool) {
	wrapper, real := m.w.runcPaths()
	if wrapper == "" || cmd.Path != wrapper || wrap.HasMemoryMerge(cmd.Args) {
		// A restore with memory merging needs the wrapper itself to run (it turns KSM on
		// for runc and what runc starts), whichever binary it is.
		return nil, false
	}
	sub, id, pidFile := wrap.ParseArgs(cmd.Args)
	req := wrap.Request{Op: sub, ID: id, PidFile: pidFile}
	if sub == "kill" {
		req.Signal = wrap.KillSignal(cmd.Args)
	}
	switch sub {
	case "create", "start", "kill", "delete":
		var files []*os.File
		if sub == "create" {
			var ok bool
			if files, ok = stdioOf(cmd); !ok {
				break // not the pipes of the process package: let the wrapper do it
			}
		}
		resp := m.w.handleOp(context.Background(), req, files)
		if resp.Error != "" {
			msg := fmt.Sprintf("warm: %s %s: %s", sub, id, resp.Error)
			wrap.LogError(cmd.Args, msg)
			if cmd.Stderr != nil {
				fmt.Fprintln(cmd.Stderr, msg)
			}
			return m.done(1), true
		}
		if resp.Handled {
			return m.done(0), true
		}
	}
	// Everything else is runc's (and its errors name runc).
	cmd.Path = real
	if len(cmd.Args) > 0 {
		cmd.Args[0] = real
	}
	return nil, false
}

func (m *monitor) done(status int) chan runcC.Exit {
	ec := make(chan runcC.Exit, 1)
	ec <- runcC.Exit{Timestamp: time.Now(), Status: status}
	return ec
}

// stdioOf duplicates the stdin, stdout and stderr go-runc gave the command (the caller
// closes its copies once the command started); a nil stdin stays nil (runc's would be
// /dev/null).
func stdioOf(cmd *exec.Cmd) ([]*os.File, bool) {
	files := make([]*os.File, 3)
	for i, v := range []any{cmd.Stdin, cmd.Stdout, cmd.Stderr} {
		if v == nil && i == 0 {
			continue
		}
		f, ok := v.(*os.File)
		if !ok || f == nil {
			closeFiles(files)
			return nil, false
		}
		d, err := dupFile(f)
		if err != nil {
			closeFiles(files)
			return nil, false
		}
		files[i] = d
	}
	return files, true
}

// dupFile duplicates f without putting it in blocking mode (as f.Fd would).
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}
