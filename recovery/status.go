package recovery

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/warmshim/warm/internal/atomicfile"
)

// StatusFile is the name of a container's recovery status, beside its checkpoints.
const StatusFile = "status.json"

// Container states a Status reports.
const (
	StateWatching   = "watching"   // running; checkpoints taken, a crash is recovered
	StateRecovering = "recovering" // restoring after a crash
	StateStopping   = "stopping"   // containerd sent a signal the task handles: within kill_grace
	StateEnding     = "ending"     // containerd killed or is deleting it: no recovery
	StateExited     = "exited"     // the exit was reported (recovery failed or not tried)
)

// Status is what a container's shim tells of its recovery: written (root-only,
// replaced whole) on every change beside the checkpoints, read by `warmctl recovery ls`.
// Durations are Go duration strings.
type Status struct {
	Container string    `json:"container"`
	Updated   time.Time `json:"updated"`
	State     string    `json:"state"`
	// StoppingUntil ends the kill_grace of state stopping.
	StoppingUntil *time.Time `json:"stopping_until,omitempty"`
	Interval      string     `json:"checkpoint_interval,omitempty"` // "" when only containerd's
	Standby       bool       `json:"standby,omitempty"`
	Recoveries    int        `json:"recoveries"`
	// LastCheckpoint is the latest periodic checkpoint attempt.
	LastCheckpoint *CheckpointAttempt `json:"last_checkpoint,omitempty"`
	// FailedCheckpoints counts the periodic checkpoints failed in a row.
	FailedCheckpoints int `json:"failed_checkpoints,omitempty"`
	// LastCrash is the latest abnormal exit and what recovery made of it.
	LastCrash *Crash `json:"last_crash,omitempty"`
}

// CheckpointAttempt is one periodic checkpoint.
type CheckpointAttempt struct {
	At    time.Time `json:"at"`
	Pause string    `json:"pause,omitempty"` // the task's pause, when it succeeded
	Error string    `json:"error,omitempty"`
}

// Crash is an abnormal exit of the task.
type Crash struct {
	At         time.Time `json:"at"`
	ExitStatus int       `json:"exit_status"`
	// Result: "recovering", "recovered", or why it was reported instead (an error, the
	// crash loop, no checkpoint).
	Result       string `json:"result"`
	Checkpoint   string `json:"checkpoint,omitempty"`    // the one restored
	ServingAfter string `json:"serving_after,omitempty"` // from the exit to serving again
	Standby      bool   `json:"standby,omitempty"`       // adopted from the standby
}

// WriteStatus replaces dir's status file with st (root-only; a reader sees the old one
// or the new one whole).
func WriteStatus(dir string, st Status) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, StatusFile), append(data, '\n')); err != nil {
		return fmt.Errorf("recovery status: %w", err)
	}
	return nil
}

// ReadStatus reads dir's status file.
func ReadStatus(dir string) (Status, error) {
	var st Status
	data, err := os.ReadFile(filepath.Join(dir, StatusFile))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("%s: %w", filepath.Join(dir, StatusFile), err)
	}
	return st, nil
}
