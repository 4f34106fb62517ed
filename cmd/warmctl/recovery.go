package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/warmshim/warm/recovery"
)

// recoveryEntry is one container with crash recovery, as `warmctl recovery ls` tells it.
type recoveryEntry struct {
	Container   string             `json:"container"`
	Status      *recovery.Status   `json:"status,omitempty"` // nil: none written (yet)
	StatusError string             `json:"status_error,omitempty"`
	Checkpoints []checkpointOnDisk `json:"checkpoints"`
}

type checkpointOnDisk struct {
	Name  string    `json:"name"`
	Taken time.Time `json:"taken"`
	Bytes int64     `json:"bytes"`
}

// recoveries reads the containers with crash recovery in namespace ns from warm's state
// directory (state_dir/checkpoints/NS/CONTAINER: their checkpoints and the status their
// shims write), without a shim.
func recoveries(stateDir, ns string) ([]recoveryEntry, error) {
	root := filepath.Join(stateDir, "checkpoints", ns)
	dirs, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w (warmctl needs root)", err)
	}
	var out []recoveryEntry
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		dir := filepath.Join(root, d.Name())
		e := recoveryEntry{Container: d.Name(), Checkpoints: []checkpointOnDisk{}}
		if st, err := recovery.ReadStatus(dir); err == nil {
			e.Status = &st
		} else if !errors.Is(err, fs.ErrNotExist) {
			e.StatusError = err.Error()
		}
		for _, cp := range recovery.ListCheckpoints(dir) {
			e.Checkpoints = append(e.Checkpoints, checkpointOnDisk{Name: filepath.Base(cp.Dir), Taken: time.Unix(0, cp.Seq), Bytes: treeBytes(cp.Dir)})
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Container < out[j].Container })
	return out, nil
}

// treeBytes is the size of the files under dir.
func treeBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// printRecoveries writes the table of `warmctl recovery ls` (now: the time ages count
// from), and a line under it for each container whose periodic checkpoints fail.
func printRecoveries(w io.Writer, es []recoveryEntry, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tSTATE\tCHECKPOINTS\tNEWEST\tSIZE\tPAUSE\tRECOVERIES\tLAST CRASH")
	var notes []string
	for _, e := range es {
		state, pause, recoveries, crash := "-", "-", "-", "-"
		if st := e.Status; st != nil {
			state = effectiveState(st, now)
			recoveries = fmt.Sprint(st.Recoveries)
			if c := st.LastCheckpoint; c != nil && c.Pause != "" {
				pause = c.Pause
			}
			if c := st.LastCrash; c != nil {
				crash = fmt.Sprintf("exit %d %s ago: %s", c.ExitStatus, age(now, c.At), c.Result)
				if c.Result == "recovered" {
					from := "from " + c.Checkpoint
					if c.Standby {
						from = "from the standby of " + c.Checkpoint
					}
					crash += fmt.Sprintf(" %s, serving after %s", from, c.ServingAfter)
				}
			}
			if c := st.LastCheckpoint; st.FailedCheckpoints > 0 && c != nil {
				kept := "the newest kept is the one a crash restores"
				if len(e.Checkpoints) == 0 {
					kept = "no checkpoint to recover from"
				}
				notes = append(notes, fmt.Sprintf("%s: the last %d periodic checkpoint(s) failed (%s): %s", e.Container, st.FailedCheckpoints, kept, c.Error))
			}
		} else if e.StatusError != "" {
			notes = append(notes, fmt.Sprintf("%s: %s", e.Container, e.StatusError))
		}
		newest, size := "none", "-"
		if len(e.Checkpoints) > 0 {
			newest, size = age(now, e.Checkpoints[0].Taken)+" ago", mib(e.Checkpoints[0].Bytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", e.Container, state, len(e.Checkpoints), newest, size, pause, recoveries, crash)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	return nil
}

// effectiveState is the status's state now: a stopping task past its kill_grace handled
// the signal and is watched again.
func effectiveState(st *recovery.Status, now time.Time) string {
	if st.State == recovery.StateStopping && st.StoppingUntil != nil {
		if now.After(*st.StoppingUntil) {
			return recovery.StateWatching
		}
		return fmt.Sprintf("stopping (kill_grace: %s left)", st.StoppingUntil.Sub(now).Round(time.Second))
	}
	return st.State
}

func age(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

func printRecoveriesJSON(w io.Writer, es []recoveryEntry) error {
	if es == nil {
		es = []recoveryEntry{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(es)
}
