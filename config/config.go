// Package config reads warm's own TOML configuration (default /etc/containerd/warm.toml).
//
// The file is strict: an unknown key or a bad value is an error that names the key and
// what is allowed, so a typo never silently falls back to a default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/warmshim/warm/internal/criuconf"
	"github.com/warmshim/warm/store"
)

// DefaultPath is where the shim looks for its configuration when containerd passes none.
const DefaultPath = "/etc/containerd/warm.toml"

// EnvPath names an environment variable that, when set, replaces DefaultPath (set it in
// containerd's `[plugins.'io.containerd.shim.v1.manager'] env` to give every warm shim
// another default, e.g. for tools like nerdctl that pass no runtime options).
const EnvPath = "WARM_CONFIG"

// Config is the shim's configuration.
type Config struct {
	// Runc is the runc binary: a name looked up in PATH or an absolute path.
	Runc string `toml:"runc"`
	// RuncRoot is runc's --root (state directory); empty means runc's default for the namespace.
	RuncRoot string `toml:"runc_root"`
	// Criu is the CRIU binary runc uses for checkpoint and restore: a name or an absolute path.
	Criu string `toml:"criu"`
	// CriuNetworkLock is how CRIU locks the network of the checkpoints warm takes itself
	// (periodic checkpoints, templates): "skip" (none), "iptables" (CRIU's own default)
	// or "nftables". They leave the task running and hold no established connection, so
	// the lock protects nothing there; with iptables it is about a third of the task's
	// pause. containerd's checkpoints (ctr, CRI) keep CRIU's default. See
	// internal/criuconf.
	CriuNetworkLock string `toml:"criu_network_lock"`
	// SystemdCgroup makes runc use the systemd cgroup driver.
	SystemdCgroup bool `toml:"systemd_cgroup"`
	// CgroupFavorDynmods lets the pool shim remount a pure cgroup v2 host's hierarchy
	// with favordynmods (its other options kept): without it each pool hit waits for an
	// RCU grace period to move the sandbox into its cgroup (6-33 ms measured); with it,
	// about 0.1 ms. The kernel option makes forks and exits host-wide a little more
	// expensive, hence off by default: the pool shim then logs a warning.
	CgroupFavorDynmods bool `toml:"cgroup_favordynmods"`
	// RefillPause lets the pool shim freeze the restores of its refills in progress while
	// it serves a pool hit (at most 50 ms at a time, then they run at least 50 ms): a
	// restore runs in its own cgroup, where a nice value does not lower its share of the
	// CPU. Off by default: on a 2-core cgroup v1 machine it lowered the p99 of hits that
	// come during a small restore but not the figures of the sample applications
	// (docs/pool.md).
	RefillPause bool `toml:"refill_pause"`
	// LogLevel is the level of the shim's log: trace, debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// StateDir holds what survives a reboot: templates (checkpoints of initialised
	// applications). Root-only.
	StateDir string `toml:"state_dir"`
	// RunDir holds what does not: pooled sandboxes' bundles and the shim's sockets.
	RunDir string `toml:"run_dir"`
	// Pool holds the defaults of every template's pool.
	Pool Pool `toml:"pool"`
	// Pools overrides Pool per template name.
	Pools map[string]Pool `toml:"pools"`
	// Recovery configures crash recovery.
	Recovery Recovery `toml:"recovery"`
}

// Recovery configures how warm restores a task that exits abnormally.
type Recovery struct {
	// Enabled turns recovery on for every container (an annotation can still turn it
	// off, or on when this is false).
	Enabled bool `toml:"enabled"`
	// MaxRetries is how many restores of one exit are tried.
	MaxRetries int `toml:"max_retries"`
	// Backoff is the wait before the first retry; it doubles with each.
	Backoff Duration `toml:"backoff"`
	// HealthTimeout bounds a health check after a restore.
	HealthTimeout Duration `toml:"health_timeout"`
	// CrashLoopMax recoveries within CrashLoopWindow stop recovery for the container.
	CrashLoopMax    int      `toml:"crash_loop_max"`
	CrashLoopWindow Duration `toml:"crash_loop_window"`
	// CheckpointKeep is how many periodic checkpoints are kept by default.
	CheckpointKeep int `toml:"checkpoint_keep"`
	// Incremental makes periodic checkpoints pre-dump memory first, so the task is
	// frozen only for what changed since.
	Incremental bool `toml:"incremental"`
	// Standby keeps, beside each recovered container, a sandbox restored from its latest
	// checkpoint and frozen, so a crash is recovered by adopting it (milliseconds) rather
	// than by a restore; it costs the memory of a second copy of the task.
	Standby bool `toml:"standby"`
	// CheckpointTimeout bounds one periodic checkpoint: past it, CRIU and runc are
	// killed (CRIU has been seen to hang on a dying task), the checkpoint fails and the
	// previous one stays the latest. It bounds a recovery's restore too (the attempt
	// then fails), a recovery standby's, the restore of a pooled sandbox (the refill
	// fails and backs off), a restore on create or from containerd's checkpoint (its
	// Start fails) and the checkpoint that makes a template by annotation (no
	// template is made; the container runs on). The [recovery] section's value applies
	// to templates and pools.
	CheckpointTimeout Duration `toml:"checkpoint_timeout"`
	// KillGrace is how long after containerd's Kill with a signal the task catches
	// (SIGTERM to a service that stops gracefully, SIGHUP to one that reloads) an exit is
	// the end that was asked for; a task still running then handled the signal, and a
	// later crash is recovered again.
	KillGrace Duration `toml:"kill_grace"`
}

// Pool configures the pool of frozen sandboxes kept for one template.
type Pool struct {
	// Min is the number of frozen sandboxes the refiller keeps at least.
	Min *int `toml:"min"`
	// Max is the number it never exceeds; above it idle sandboxes are destroyed.
	Max *int `toml:"max"`
	// Initial is how many are restored as soon as the template exists.
	Initial *int `toml:"initial"`
	// RefillBatch is how many sandboxes one refill round restores at most.
	RefillBatch *int `toml:"refill_batch"`
	// RefillInterval is the refiller's period.
	RefillInterval *Duration `toml:"refill_interval"`
	// AcquireTimeout is how long a Create waits for a refill when the pool is empty
	// before falling back to a restore-on-create.
	AcquireTimeout *Duration `toml:"acquire_timeout"`
	// IdleTimeout shrinks the pool back to Min after this long without an acquire.
	IdleTimeout *Duration `toml:"idle_timeout"`
	// MaxMemory bounds the memory of all frozen sandboxes of the pool ("0" = no bound).
	MaxMemory *ByteSize `toml:"max_memory"`
	// AllowEnv names environment variables a request may set differently from the
	// template and still be served from the pool (the sandbox keeps the template's values).
	AllowEnv []string `toml:"allow_env"`
	// Image names a containerd checkpoint image (from `ctr c checkpoint --task`) that
	// makes this template; only in [pools.NAME].
	Image string `toml:"image"`
	// KSM restores the pool's sandboxes with kernel same-page merging on (Linux 6.4+,
	// with KSM running: /sys/kernel/mm/ksm/run = 1), so that the pages they all restore
	// from the template are kept once. A served container keeps merging on. Off by
	// default: merged pages are shared across containers (see docs/pool.md).
	KSM *bool `toml:"ksm"`
}

// PoolDefaults are the documented defaults of every pool.
var PoolDefaults = Pool{
	Min:            ptr(1),
	Max:            ptr(4),
	Initial:        ptr(1),
	RefillBatch:    ptr(2),
	RefillInterval: &Duration{100 * time.Millisecond},
	AcquireTimeout: &Duration{500 * time.Millisecond},
	IdleTimeout:    &Duration{10 * time.Minute},
	MaxMemory:      ptr(ByteSize(0)),
	KSM:            ptr(false),
}

func ptr[T any](v T) *T { return &v }

// Duration is a time.Duration written as a string ("250ms", "5m").
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration like \"250ms\" or \"5m\"", string(b))
	}
	if v < 0 {
		return fmt.Errorf("%q is negative", string(b))
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// ByteSize is a size in bytes written as a string ("512MiB", "2GiB", "1000000").
type ByteSize int64

// UnmarshalText parses sizes with an optional KiB, MiB or GiB suffix.
func (b *ByteSize) UnmarshalText(t []byte) error {
	s := strings.TrimSpace(string(t))
	mult := int64(1)
	for suf, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suf) {
			s, mult = strings.TrimSuffix(s, suf), m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a size like \"512MiB\", \"2GiB\" or a number of bytes", string(t))
	}
	if n > math.MaxInt64/mult {
		return fmt.Errorf("%q is too large", string(t))
	}
	*b = ByteSize(n * mult)
	return nil
}

// Resolved is a pool configuration with every field set.
type Resolved struct {
	Min, Max, Initial, RefillBatch              int
	RefillInterval, AcquireTimeout, IdleTimeout time.Duration
	MaxMemory                                   int64
	AllowEnv                                    []string
	Image                                       string
	KSM                                         bool
}

// PoolFor returns the configuration of the named template's pool: [pools.NAME] over
// [pool] over PoolDefaults.
func (c Config) PoolFor(name string) Resolved {
	p := merge(merge(PoolDefaults, c.Pool), c.Pools[name])
	if len(p.AllowEnv) == 0 {
		p.AllowEnv = nil
	}
	return Resolved{
		Min: *p.Min, Max: *p.Max, Initial: *p.Initial, RefillBatch: *p.RefillBatch,
		RefillInterval: p.RefillInterval.Duration, AcquireTimeout: p.AcquireTimeout.Duration,
		IdleTimeout: p.IdleTimeout.Duration, MaxMemory: int64(*p.MaxMemory),
		AllowEnv: p.AllowEnv, Image: p.Image, KSM: *p.KSM,
	}
}

func merge(base, over Pool) Pool {
	if over.Min != nil {
		base.Min = over.Min
	}
	if over.Max != nil {
		base.Max = over.Max
	}
	if over.Initial != nil {
		base.Initial = over.Initial
	}
	if over.RefillBatch != nil {
		base.RefillBatch = over.RefillBatch
	}
	if over.RefillInterval != nil {
		base.RefillInterval = over.RefillInterval
	}
	if over.AcquireTimeout != nil {
		base.AcquireTimeout = over.AcquireTimeout
	}
	if over.IdleTimeout != nil {
		base.IdleTimeout = over.IdleTimeout
	}
	if over.MaxMemory != nil {
		base.MaxMemory = over.MaxMemory
	}
	if over.AllowEnv != nil {
		base.AllowEnv = over.AllowEnv
	}
	if over.Image != "" {
		base.Image = over.Image
	}
	if over.KSM != nil {
		base.KSM = over.KSM
	}
	return base
}

// Default returns the configuration used when no file exists.
func Default() Config {
	return Config{Runc: "runc", Criu: "criu", CriuNetworkLock: "skip", LogLevel: "info", StateDir: "/var/lib/warm", RunDir: "/run/warm",
		Recovery: Recovery{MaxRetries: 3, Backoff: Duration{100 * time.Millisecond}, HealthTimeout: Duration{5 * time.Second},
			CrashLoopMax: 5, CrashLoopWindow: Duration{time.Minute}, CheckpointKeep: 3, Incremental: true,
			CheckpointTimeout: Duration{2 * time.Minute}, KillGrace: Duration{2 * time.Minute}}}
}

var logLevels = []string{"trace", "debug", "info", "warn", "error"}

// Parse reads a configuration from TOML text. source names the text in errors (a path).
func Parse(data []byte, source string) (Config, error) {
	parsed.mu.Lock()
	defer parsed.mu.Unlock()
	if parsed.ok && parsed.source == source && parsed.data == string(data) {
		return parsed.cfg, nil
	}
	c, err := parse(data, source)
	if err == nil {
		parsed.source, parsed.data, parsed.cfg, parsed.ok = source, string(data), c, true
	}
	return c, err
}

// parsed remembers the last configuration parsed: a long-lived shim (a pool shim, a
// pod's shim) gets the same file with every Create. A Config is never modified after
// parsing, so sharing its maps and pointers is safe.
var parsed struct {
	mu     sync.Mutex
	ok     bool   // guarded by mu
	source string // guarded by mu
	data   string // guarded by mu
	cfg    Config // guarded by mu
}

func parse(data []byte, source string) (Config, error) {
	c := Default()
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) && len(sm.Errors) > 0 {
			var keys []string
			for _, e := range sm.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return Config{}, fmt.Errorf("warm config %s: unknown key %s; allowed keys are %s",
				source, strings.Join(keys, ", "), strings.Join(allowedKeys(), ", "))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			key := strings.Join(de.Key(), ".")
			if key != "" {
				return Config{}, fmt.Errorf("warm config %s:%d:%d: key %s: %s", source, row, col, key, de.Error())
			}
			return Config{}, fmt.Errorf("warm config %s:%d:%d: %s", source, row, col, de.Error())
		}
		return Config{}, fmt.Errorf("warm config %s: %w", source, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("warm config %s: %w", source, err)
	}
	return c, nil
}

// Path is the file Load(path) reads: path, else $WARM_CONFIG, else DefaultPath.
func Path(path string) string {
	if path == "" {
		path = os.Getenv(EnvPath)
	}
	if path == "" {
		path = DefaultPath
	}
	return path
}

// Load reads the configuration at path ("" for the default: $WARM_CONFIG, else
// DefaultPath). A missing file at DefaultPath yields the defaults; a missing file anywhere
// else is an error (the user named it).
func Load(path string) (Config, error) {
	c, _, err := LoadVersion(path)
	return c, err
}

// Version tells one version of a file from another (its device, inode, size, mtime and
// ctime); the zero value is a missing file.
type Version struct{ dev, ino, size, mtime, ctime int64 }

func versionOf(fi os.FileInfo) Version {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Version{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	}
	return Version{int64(st.Dev), int64(st.Ino), st.Size, st.Mtim.Nano(), st.Ctim.Nano()}
}

// VersionOf is the version of the file at path now.
func VersionOf(path string) Version {
	fi, err := os.Stat(path)
	if err != nil {
		return Version{}
	}
	return versionOf(fi)
}

// LoadVersion is Load, and the version of the file it read, from the file it opened (no
// second look at the path); the zero Version for the defaults of a missing DefaultPath.
func LoadVersion(path string) (Config, Version, error) {
	path = Path(path)
	var (
		data []byte
		v    Version
	)
	f, err := os.Open(path)
	if err == nil {
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil {
			v = versionOf(fi)
			data, err = io.ReadAll(f)
		}
		f.Close()
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && path == DefaultPath {
			return Default(), Version{}, nil
		}
		return Config{}, Version{}, fmt.Errorf("warm config: %w", err)
	}
	c, err := Parse(data, path)
	return c, v, err
}

// Validate checks values that TOML types alone cannot.
func (c Config) Validate() error {
	if c.Runc == "" {
		return errors.New(`key runc: must name the runc binary (a name in PATH or an absolute path), e.g. runc = "runc"`)
	}
	if c.Criu == "" {
		return errors.New(`key criu: must name the CRIU binary (a name in PATH or an absolute path), e.g. criu = "criu"`)
	}
	if !contains(criuconf.Methods, c.CriuNetworkLock) {
		return fmt.Errorf("key criu_network_lock: %q is not one of %s", c.CriuNetworkLock, strings.Join(criuconf.Methods, ", "))
	}
	if c.RuncRoot != "" && !filepath.IsAbs(c.RuncRoot) {
		return fmt.Errorf("key runc_root: %q must be an absolute path", c.RuncRoot)
	}
	if !contains(logLevels, c.LogLevel) {
		return fmt.Errorf("key log_level: %q is not one of %s", c.LogLevel, strings.Join(logLevels, ", "))
	}
	for k, p := range map[string]string{"state_dir": c.StateDir, "run_dir": c.RunDir} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("key %s: %q must be an absolute path", k, p)
		}
	}
	r := c.Recovery
	switch {
	case r.MaxRetries < 1:
		return fmt.Errorf("key recovery.max_retries: %d must be at least 1", r.MaxRetries)
	case r.CrashLoopMax < 1:
		return fmt.Errorf("key recovery.crash_loop_max: %d must be at least 1", r.CrashLoopMax)
	case r.CheckpointKeep < 1:
		return fmt.Errorf("key recovery.checkpoint_keep: %d must be at least 1 (the latest checkpoint)", r.CheckpointKeep)
	case r.HealthTimeout.Duration <= 0:
		return fmt.Errorf("key recovery.health_timeout: must be positive")
	case r.KillGrace.Duration <= 0:
		return fmt.Errorf("key recovery.kill_grace: must be positive (the longest graceful stop of your services, e.g. \"2m\")")
	}
	if r.CheckpointTimeout.Duration < time.Second {
		return fmt.Errorf("key recovery.checkpoint_timeout: %v must be at least 1s (CRIU needs that for a small task)", r.CheckpointTimeout.Duration)
	}
	if c.Pool.Image != "" {
		return errors.New("key pool.image: a checkpoint image names one template; set it in [pools.NAME]")
	}
	if err := validatePool("pool", c.PoolFor("")); err != nil {
		return err
	}
	for name := range c.Pools {
		if err := store.ValidName(name); err != nil {
			return fmt.Errorf("section pools.%q: %w", name, err)
		}
		if err := validatePool("pools."+name, c.PoolFor(name)); err != nil {
			return err
		}
	}
	return nil
}

func validatePool(section string, p Resolved) error {
	for k, v := range map[string]int{"min": p.Min, "max": p.Max, "initial": p.Initial} {
		if v < 0 {
			return fmt.Errorf("key %s.%s: %d must not be negative", section, k, v)
		}
	}
	switch {
	case p.Max < 1:
		return fmt.Errorf("key %s.max: %d must be at least 1 (drain a pool with `warmctl pool drain` instead)", section, p.Max)
	case p.Min > p.Max:
		return fmt.Errorf("keys %s.min and %s.max: min %d is greater than max %d; set min <= max", section, section, p.Min, p.Max)
	case p.Initial > p.Max:
		return fmt.Errorf("keys %s.initial and %s.max: initial %d is greater than max %d; set initial <= max", section, section, p.Initial, p.Max)
	case p.RefillBatch < 1:
		return fmt.Errorf("key %s.refill_batch: %d must be at least 1", section, p.RefillBatch)
	case p.MaxMemory < 0:
		return fmt.Errorf("key %s.max_memory: %d must not be negative (0 is no bound)", section, p.MaxMemory)
	case p.RefillInterval < time.Millisecond:
		return fmt.Errorf("key %s.refill_interval: %v must be at least 1ms", section, p.RefillInterval)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// allowedKeys lists every key the file may hold, from the toml tags.
func allowedKeys() []string {
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("toml"), ",")[0]
			switch {
			case f.Type == reflect.TypeOf(Pool{}) || f.Type == reflect.TypeOf(Recovery{}):
				walk(f.Type, prefix+tag+".")
			case f.Type == reflect.TypeOf(map[string]Pool{}):
				walk(reflect.TypeOf(Pool{}), prefix+tag+".NAME.")
			default:
				keys = append(keys, prefix+tag)
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	sort.Strings(keys)
	return keys
}
