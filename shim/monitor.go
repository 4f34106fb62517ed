package shim

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"time"

	runcC "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/oci/wrap"
)

// monitor is go-runc's process monitor in this shim: the reaper's, except for the runc
// commands of containers served from a pool. Those name the wrapper (warm-runc) as their
// runc; create and start are carried out here, with no process at all (adopt, thaw: a
// pool hit forks nothing), and every other command goes straight to the real runc, after
// the thaw a kill or delete of a never-started sandbox needs. The wrapper binary stays
// the runc recorded in the bundle, for whatever runs runc outside this process.
type monitor struct {
	inner runcC.ProcessMonitor
	w     *warm

	handled sync.Map // *exec.Cmd carried out here -> struct{}
}

func (m *monitor) Start(cmd *exec.Cmd) (chan runcC.Exit, error) {
	if ec, ok := m.intercept(cmd); ok {
		return ec, nil
	}
	return m.inner.Start(cmd)
}

func (m *monitor) StartLocked(cmd *exec.Cmd) (chan runcC.Exit, error) {
	if ec, ok := m.intercept(cmd); ok {
		return ec, nil
	}
	return m.inner.StartLocked(cmd)
}

func (m *monitor) Wait(cmd *exec.Cmd, ec chan runcC.Exit) (int, error) {
	if _, ok := m.handled.LoadAndDelete(cmd); ok {
		e := <-ec
		return e.Status, nil
	}
	return m.inner.Wait(cmd, ec)
}

// intercept carries out cmd here if it is a create or start of a served container, and
// otherwise points a wrapper command at the real runc.
func (m *monitor) intercept(cmd *exec.Cmd) (chan runcC.Exit, bool) {
	wrapper, real := m.w.runcPaths()
	if wrapper == "" || cmd.Path != wrapper {
		return nil, false
	}
	sub, id, pidFile := wrap.Parse(cmd.Args)
	req := wrap.Request{Op: sub, ID: id, PidFile: pidFile}
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
			return m.done(cmd, 1), true
		}
		if resp.Handled {
			return m.done(cmd, 0), true
		}
	}
	// Everything else is runc's.
	cmd.Path = real
	return nil, false
}

func (m *monitor) done(cmd *exec.Cmd, status int) chan runcC.Exit {
	m.handled.Store(cmd, struct{}{})
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
