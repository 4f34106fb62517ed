package shim

import (
	"errors"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/containerd/log"

	"github.com/warmshim/warm/recovery"
)

// noteStatus changes a recovered container's status (change may be nil) and writes it
// beside its checkpoints (recovery.WriteStatus), for `warmctl recovery ls`. Each write
// takes the status as it is then, so writes that run late or out of order still leave
// the latest. Called without rec.mu.
func (s *service) noteStatus(rec *recoverable, change func(st *recovery.Status)) {
	rec.statusMu.Lock()
	defer rec.statusMu.Unlock()
	if rec.statusDone {
		return
	}
	rec.mu.Lock()
	if change != nil {
		change(&rec.status)
	}
	rec.status.Updated = time.Now()
	st := rec.status // the change replaces what it changes: the pointers are not shared
	rec.mu.Unlock()
	if err := recovery.WriteStatus(rec.cps.Dir(), st); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.G(s.context).WithError(err).WithField("container", rec.id).Warn("recovery status not written")
	}
}

// initialStatus is a container's status as its recovery is prepared.
func initialStatus(id string, pol recovery.Policy) recovery.Status {
	st := recovery.Status{Container: id, State: recovery.StateWatching, Standby: pol.Standby}
	if pol.Interval > 0 {
		st.Interval = pol.Interval.String()
	}
	return st
}

// noteCheckpoint records a periodic checkpoint: its pause, or why it failed.
func (s *service) noteCheckpoint(rec *recoverable, pause time.Duration, err error) {
	s.noteStatus(rec, func(st *recovery.Status) {
		a := &recovery.CheckpointAttempt{At: time.Now()}
		if err != nil {
			a.Error = err.Error()
			st.FailedCheckpoints++
		} else {
			a.Pause = pause.String()
			st.FailedCheckpoints = 0
		}
		st.LastCheckpoint = a
	})
}

// noteCrash records an abnormal exit and what recovery makes of it (result); state is
// the container's state after it.
func (s *service) noteCrash(rec *recoverable, at time.Time, status int, result, state string) {
	s.noteStatus(rec, func(st *recovery.Status) {
		st.State = state
		st.LastCrash = &recovery.Crash{At: at, ExitStatus: status, Result: result}
	})
}

// noteRecovered records the recovery of the latest crash.
func (s *service) noteRecovered(rec *recoverable, cp *recovery.Checkpoint, servingAfter time.Duration, standby bool) {
	s.noteStatus(rec, func(st *recovery.Status) {
		c := lastCrash(st)
		c.Result, c.Checkpoint, c.ServingAfter, c.Standby = "recovered", filepath.Base(cp.Dir), servingAfter.String(), standby
		st.State = recovery.StateWatching
		st.Recoveries = rec.recovered // change runs with rec.mu
	})
}

// noteRecoveryFailed records the recovery's end without a restored task.
func (s *service) noteRecoveryFailed(rec *recoverable, err error) {
	s.noteStatus(rec, func(st *recovery.Status) {
		lastCrash(st).Result = "reported: " + err.Error()
		st.State = recovery.StateExited
	})
}

// lastCrash replaces st's last crash by a copy of it (a written status may share the
// old one) and returns the copy to change.
func lastCrash(st *recovery.Status) *recovery.Crash {
	c := &recovery.Crash{}
	if st.LastCrash != nil {
		*c = *st.LastCrash
	}
	st.LastCrash = c
	return c
}
