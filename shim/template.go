package shim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/fifo"
	runcC "github.com/containerd/go-runc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/internal/procfs"
	"github.com/warmshim/warm/internal/runctask"
	"github.com/warmshim/warm/oci"
	"github.com/warmshim/warm/store"
)

// maker is a container that makes a template once it is ready.
type maker struct {
	name   string
	ns     string
	rule   readyRule
	spec   *specs.Spec
	layers string
	ready  chan struct{} // closed by the stdout tee when its text appears
	tee    io.Closer     // the stdout tee's FIFO (a stdout rule), closed if the Create fails
}

// abandon releases what prepareMaker set up for a Create that failed.
func (m *maker) abandon() {
	if m.tee != nil {
		m.tee.Close()
	}
}

// prepareMaker validates a template-making request and, for a stdout rule, puts a tee
// between the process and containerd's stdout FIFO.
func (w *warm) prepareMaker(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec, topts *taskOptions) (*maker, error) {
	name := spec.Annotations[AnnTemplate]
	if err := store.ValidName(name); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", AnnTemplate, err)
	}
	rule, err := parseReady(spec.Annotations[AnnReady])
	if err != nil {
		return nil, err
	}
	if r.Terminal {
		return nil, fmt.Errorf("annotation %s: a template cannot be made from a container with a tty (CRIU cannot restore it into another); run it without -t", AnnTemplate)
	}
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	if err := w.start(ctx, *topts, ns); err != nil {
		return nil, err
	}
	m := &maker{name: name, ns: ns, rule: rule, spec: spec, layers: layersOf(r), ready: make(chan struct{})}
	if rule.kind == "stdout" {
		path := filepath.Join(r.Bundle, "warm-stdout")
		tee, err := startTee(path, r.Stdout, []byte(rule.arg), m.ready)
		if err != nil {
			return nil, fmt.Errorf("stdout readiness: %w", err)
		}
		m.tee = tee
		r.Stdout = path
	}
	return m, nil
}

// startTee copies what the process writes to path on to the original stdout (if any),
// closing ready when a line contains text.
// Closing the returned FIFO ends the copy.
func startTee(path, orig string, text []byte, ready chan struct{}) (io.Closer, error) {
	rf, err := fifo.OpenFifo(context.Background(), path, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		return nil, err
	}
	go func() {
		defer rf.Close()
		var out io.WriteCloser
		if orig != "" {
			if f, err := fifo.OpenFifo(context.Background(), orig, syscall.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				out = f
				defer f.Close()
			}
		}
		var once sync.Once
		var line []byte
		buf := make([]byte, 32<<10)
		for {
			n, err := rf.Read(buf)
			if n > 0 {
				if out != nil {
					_, _ = out.Write(buf[:n])
				}
				line = append(line, buf[:n]...)
				for {
					i := bytes.IndexByte(line, '\n')
					if i < 0 {
						break
					}
					if bytes.Contains(line[:i], text) {
						once.Do(func() { close(ready) })
					}
					line = line[i+1:]
				}
				// A line not ended yet counts too (a prompt is written without one).
				if bytes.Contains(line, text) {
					once.Do(func() { close(ready) })
				}
				// A long line keeps only the tail a match could still start in.
				if keep := len(text); len(line) > 64<<10 && keep < len(line) {
					line = append(line[:0:0], line[len(line)-keep:]...)
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return rf, nil
}

// watchMaker waits for the container to be ready, then checkpoints it (leaving it
// running) into the store and gives the template's pool the new generation.
func (w *warm) watchMaker(m *maker, c *runctask.Container) {
	ctx := log.WithLogger(namespaces.WithNamespace(context.Background(), m.ns),
		log.G(context.Background()).WithField("template", m.name).WithField("container", c.ID))
	p, err := c.Process("")
	if err != nil {
		return
	}
	ip := p.(*process.Init)
	pid := ip.Pid()
	alive := func() bool { return syscall.Kill(pid, 0) == nil && !procfs.Dead(pid) }
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var deadline <-chan time.Time
	if m.rule.kind == "delay" {
		deadline = time.After(m.rule.delay)
	}
wait:
	for {
		select {
		case <-m.ready:
			break wait
		case <-deadline:
			break wait
		case <-tick.C:
			if !alive() {
				log.G(ctx).Warn("template container exited before it was ready: no template made")
				return
			}
			if m.rule.kind == "file" && existsUnder(filepath.Join("/proc", strconv.Itoa(pid), "root"), m.rule.arg) {
				break wait
			}
		}
	}
	meta := store.Meta{Name: m.name, Namespace: m.ns, Created: time.Now().UTC(), Source: "annotation",
		Spec: m.spec, Layers: m.layers, MemoryBytes: oci.Memory(pid)}
	if sn, parent, err := w.rootfs.parentOf(ctx, c.ID); err != nil {
		log.G(ctx).WithError(err).Warn("template: image snapshot unknown; pooled sandboxes cannot get a rootfs")
	} else {
		meta.Snapshotter, meta.SnapshotParent = sn, parent
	}
	w.mu.Lock()
	cfg := w.cfg
	w.mu.Unlock()
	dumpCtx := ownDumpContext(ctx, cfg)
	// CRIU can hang (seen: waiting for a breakpoint the host never fires, and on a task
	// that died during a dump), holding the container stopped: past checkpoint_timeout
	// the runc checkpoint and CRIU under it are killed, and the container runs on.
	timeout := checkpointTimeout(cfg.Recovery.CheckpointTimeout.Duration)
	var timedOut atomic.Bool
	watchdog := abortAfter(w.abort, timeout, "checkpoint", c.ID, func() {
		timedOut.Store(true)
		log.G(ctx).WithField("checkpoint_timeout", timeout).Warn("template checkpoint ran past checkpoint_timeout: runc and CRIU killed")
	})
	start := time.Now()
	t, err := w.store.Commit(meta, func(images string) error {
		work := filepath.Join(c.Bundle, "warm-template-work")
		defer os.RemoveAll(work)
		err := ip.Runtime().Checkpoint(dumpCtx, c.ID, &runcC.CheckpointOpts{ImagePath: images, WorkDir: work}, runcC.LeaveRunning)
		watchdog.Stop()
		if err != nil {
			// The container was running when the dump began.
			thawAfterFailedDump(log.G(ctx), ip.Runtime().Root, c.ID)
		}
		if err != nil && timedOut.Load() {
			return fmt.Errorf("checkpoint killed after checkpoint_timeout (%v): %w", timeout, err)
		}
		if err != nil {
			return fmt.Errorf("%w (CRIU: %s)", err, oci.CriuErrors(filepath.Join(work, "dump.log")))
		}
		return nil
	})
	if err != nil {
		log.G(ctx).WithError(err).Error("template checkpoint failed; the container keeps running")
		return
	}
	log.G(ctx).WithField("generation", t.Generation).WithField("checkpoint", time.Since(start)).Info("template registered")
	w.mu.Lock()
	poolShim := w.poolShim
	if poolShim {
		w.poolLocked(t)
	}
	w.mu.Unlock()
	if !poolShim {
		// The namespace's pool shim, if one runs, rolls its pool over to the new
		// generation; otherwise it loads the template when a container first names it.
		w.notifyPoolShim(m.name)
	}
}

// existsUnder reports whether path exists in the file system rooted at root (a process's
// /proc/PID/root), its symbolic links resolved inside that root (openat2
// RESOLVE_IN_ROOT), never against the shim's: /var/run/app.ready in a Debian image is
// /run/app.ready of the container.
func existsUnder(rootDir, path string) bool {
	root, err := unix.Open(rootDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, strings.TrimPrefix(path, "/"), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOSYS) {
		// Before Linux 5.6: through the host's view of the root (links not confined).
		_, err := os.Stat(filepath.Join(rootDir, path))
		return err == nil
	}
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}
