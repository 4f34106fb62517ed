// Package recovery decides when a task that exited is restored from a checkpoint, keeps
// the task's checkpoints (atomic, verified, pruned), and tracks crash loops. The shim
// does the restoring; this package holds the rules.
package recovery

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/warmshim/warm/config"
)

// Annotations that opt a container in and tune it.
const (
	AnnRecovery = "io.containerd.warm.recovery"            // on | off
	AnnInterval = "io.containerd.warm.checkpoint-interval" // DURATION
	AnnKeep     = "io.containerd.warm.checkpoint-keep"     // N
	AnnHealth   = "io.containerd.warm.health"              // exec:CMD | file:/path | stdout:TEXT
	AnnStandby  = "io.containerd.warm.recovery-standby"    // on | off
	AnnGrace    = "io.containerd.warm.kill-grace"          // DURATION
)

// Health is a check that a restored task serves again.
type Health struct {
	Kind string // exec, file, stdout; "" = the process is alive
	Arg  string
}

// Policy is the recovery configuration of one container.
type Policy struct {
	Enabled         bool
	Interval        time.Duration // periodic checkpoints; 0 = only containerd's
	Keep            int
	Health          Health
	HealthTimeout   time.Duration
	MaxRetries      int
	Backoff         time.Duration
	CrashLoopMax    int
	CrashLoopWindow time.Duration
	Incremental     bool
	// Standby keeps a frozen restore of the latest checkpoint ready to adopt on a crash.
	Standby bool
	// CheckpointTimeout bounds one periodic checkpoint.
	CheckpointTimeout time.Duration
	// KillGrace: an exit this soon after containerd's Kill with a signal the task
	// catches is the end asked for (SignalEffect Handled), not a crash.
	KillGrace time.Duration
}

// onOff sets *dst from an on/off annotation, when present.
func onOff(ann map[string]string, key string, dst *bool) error {
	v, ok := ann[key]
	if !ok {
		return nil
	}
	switch v {
	case "on", "true":
		*dst = true
	case "off", "false":
		*dst = false
	default:
		return fmt.Errorf("annotation %s=%q: use on or off", key, v)
	}
	return nil
}

// FromAnnotations builds a container's policy from the config's [recovery] and the
// container's annotations. A malformed annotation is an error naming it and the fix.
func FromAnnotations(cfg config.Recovery, ann map[string]string) (Policy, error) {
	p := Policy{
		Enabled: cfg.Enabled, Keep: cfg.CheckpointKeep, HealthTimeout: cfg.HealthTimeout.Duration,
		MaxRetries: cfg.MaxRetries, Backoff: cfg.Backoff.Duration, CrashLoopMax: cfg.CrashLoopMax,
		CrashLoopWindow: cfg.CrashLoopWindow.Duration, Incremental: cfg.Incremental, Standby: cfg.Standby,
		CheckpointTimeout: cfg.CheckpointTimeout.Duration, KillGrace: cfg.KillGrace.Duration,
	}
	if err := onOff(ann, AnnRecovery, &p.Enabled); err != nil {
		return p, err
	}
	if v := ann[AnnInterval]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 100*time.Millisecond {
			return p, fmt.Errorf("annotation %s=%q: use a duration of at least 100ms, e.g. 30s", AnnInterval, v)
		}
		p.Interval = d
	}
	if v := ann[AnnGrace]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return p, fmt.Errorf("annotation %s=%q: use a positive duration, e.g. 2m (the longest the task takes to stop gracefully)", AnnGrace, v)
		}
		p.KillGrace = d
	}
	if v := ann[AnnKeep]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return p, fmt.Errorf("annotation %s=%q: use a number of checkpoints, at least 1", AnnKeep, v)
		}
		p.Keep = n
	}
	if err := onOff(ann, AnnStandby, &p.Standby); err != nil {
		return p, err
	}
	if v := ann[AnnHealth]; v != "" {
		kind, arg, ok := strings.Cut(v, ":")
		switch {
		case !ok || arg == "":
			return p, fmt.Errorf("annotation %s=%q: use exec:CMD, file:/path or stdout:TEXT", AnnHealth, v)
		case kind == "file" && !strings.HasPrefix(arg, "/"):
			return p, fmt.Errorf("annotation %s=%q: the file path must be absolute", AnnHealth, v)
		case kind != "exec" && kind != "file" && kind != "stdout":
			return p, fmt.Errorf("annotation %s=%q: unknown kind %q; use exec:CMD, file:/path or stdout:TEXT", AnnHealth, v, kind)
		}
		p.Health = Health{Kind: kind, Arg: arg}
	}
	return p, nil
}

// Abnormal reports whether an exit is one recovery handles: not exit 0 (a normal end),
// and not an exit caused by containerd's Kill or Delete. A non-zero exit, a death by a
// signal (128+n) and an OOM kill (137) are abnormal.
func Abnormal(status int, killedByContainerd bool) bool {
	return status != 0 && !killedByContainerd
}

// CrashLoop counts recoveries in a sliding window.
type CrashLoop struct {
	times []time.Time
}

// Allow records a recovery at now and reports whether it may proceed: false once more
// than max recoveries fall within window.
func (c *CrashLoop) Allow(now time.Time, max int, window time.Duration) bool {
	kept := c.times[:0]
	for _, t := range c.times {
		if now.Sub(t) < window {
			kept = append(kept, t)
		}
	}
	c.times = kept
	if len(c.times) >= max {
		return false
	}
	c.times = append(c.times, now)
	return true
}
