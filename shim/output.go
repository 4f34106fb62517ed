package shim

import (
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
	"github.com/containerd/log"

	"github.com/warmshim/warm/internal/pipewatch"
	"github.com/warmshim/warm/internal/runctask"
)

// outputDrainTimeout bounds how long a process's exit waits for its output to be read;
// outputStall is how long it waits when nothing moves (nobody reads: `ctr run -d`
// left). Variables for tests.
var (
	outputDrainTimeout = 2 * time.Second
	outputStall        = 250 * time.Millisecond
)

// outputDrain tells whether what a process wrote is still on its way to containerd's
// client: in the pipes the shim's copies read, or in containerd's FIFOs.
//
// containerd's client drops what it has not read when it deletes a task (since
// containerd 1.7 cio's Cancel closes its FIFO readers before Delete waits for them), and
// `ctr run` deletes the task as soon as Wait reports the exit. An exit reported while the
// last lines were still in the shim's pipes lost them: seen for pool hits (their output
// makes one hop more, the sandbox's pipe) and for restores in a busy pool shim. So a
// process's exit is reported once its output has been read out of the pipes and FIFOs,
// or once nothing moved for outputStall, or after outputDrainTimeout.
type outputDrain struct {
	pipes *pipewatch.Watch
	more  func() bool // output still on its way into those pipes (a pool hit's pumps); may be nil
}

// pending returns the bytes unread and whether more is on its way.
func (d *outputDrain) pending() (int, bool) {
	return d.pipes.Unread(), d.more != nil && d.more()
}

func (d *outputDrain) close() { d.pipes.Close() }

// wait polls until nothing is pending, nothing moved for stall, or the timeout passed;
// it reports whether the output drained.
func (d *outputDrain) wait(timeout, stall time.Duration) bool {
	began := time.Now()
	last, _ := d.pending()
	moved := began
	step := 500 * time.Microsecond
	for {
		n, more := d.pending()
		if n == 0 && !more {
			return true
		}
		now := time.Now()
		if n != last {
			last, moved = n, now
		}
		if now.Sub(moved) > stall || now.Sub(began) > timeout {
			return false
		}
		time.Sleep(step)
		step = min(2*step, 10*time.Millisecond)
	}
}

// watchOutput starts watching the pipes p writes its output into; p's process must exist
// (its FIFOs are watched from its exit on, see afterOutput). A process with a terminal or
// without stdio has nothing to wait for; one already watched keeps its watch.
func (s *service) watchOutput(c *runctask.Container, p process.Process) {
	_, init := p.(*process.Init)
	var pipes *pipewatch.Watch
	if !init {
		// Watched since runc exec was given them: a short exec is gone from /proc by now.
		pipes = s.takeExecOutput(c, p.ID())
	}
	s.mu.Lock()
	watched := s.outputs[p] != nil
	s.mu.Unlock()
	st := p.Stdio()
	if watched || st.Terminal || st.IsNull() || p.Pid() <= 0 {
		pipes.Close()
		return
	}
	d := &outputDrain{pipes: pipes}
	if init {
		// A pool hit's process writes into its sandbox's pipes; the sandbox follows
		// those and the container's own.
		d.more = s.warm.outputPending(c.ID, p.Pid())
	}
	if d.pipes == nil {
		d.pipes = &pipewatch.Watch{}
		if d.more == nil {
			d.pipes.AddProcess(p.Pid(), 1, 2)
		}
	}
	if log.GetLevel() >= log.DebugLevel {
		log.G(s.context).WithField("container", c.ID).WithField("process", p.ID()).WithField("pipes", d.pipes.Len()).
			WithField("exec_pipes", pipes != nil).WithField("pumps", d.more != nil).Debug("watching output")
	}
	if d.pipes.Len() == 0 && d.more == nil {
		return
	}
	s.mu.Lock()
	s.outputs[p] = d
	s.mu.Unlock()
}

// takeExecOutput returns the monitor's watch of exec execID's pipes (nil if none); its
// pid file is the process package's.
func (s *service) takeExecOutput(c *runctask.Container, execID string) *pipewatch.Watch {
	if s.monitor == nil {
		return nil
	}
	return s.monitor.takeExecOutput(filepath.Join(c.Bundle, execID+".pid"))
}

// takeOutput removes p's watch and returns it (nil if none).
func (s *service) takeOutput(p process.Process) *outputDrain {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.outputs[p]
	delete(s.outputs, p)
	return d
}

// dropOutput forgets p's watch: its exit is not reported after all (a recovery took
// over) or it was deleted.
func (s *service) dropOutput(p process.Process) {
	if d := s.takeOutput(p); d != nil {
		d.close()
	}
}

// afterOutput runs report once p's output has drained: at once if nothing is pending,
// else from a goroutine, so other processes' exits are not held up. containerd's FIFOs
// are watched from now on (not from Create: a pool hit's path).
func (s *service) afterOutput(id string, p process.Process, report func()) {
	d := s.takeOutput(p)
	if p != nil {
		if st := p.Stdio(); !st.Terminal && !st.IsNull() {
			if d == nil {
				d = &outputDrain{pipes: &pipewatch.Watch{}}
			}
			d.pipes.AddFIFO(st.Stdout)
			if st.Stderr != st.Stdout {
				d.pipes.AddFIFO(st.Stderr)
			}
		}
	}
	if d == nil {
		report()
		return
	}
	if n, more := d.pending(); n == 0 && !more {
		d.close()
		report()
		return
	}
	go func() {
		began := time.Now()
		drained := d.wait(outputDrainTimeout, outputStall)
		n, more := d.pending()
		d.close()
		entry := log.G(s.context).WithField("container", id).WithField("process", p.ID()).WithField("waited", time.Since(began))
		if drained {
			entry.Debug("exit reported after the output drained")
		} else {
			// Nobody reads it (`ctr run -d` left), or too slowly.
			entry.WithField("unread", n).WithField("copying", more).Info("exit reported with output still unread")
		}
		report()
	}()
}
