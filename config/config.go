// Package config reads warm's own TOML configuration (default /etc/containerd/warm.toml).
//
// The file is strict: an unknown key or a bad value is an error that names the key and
// what is allowed, so a typo never silently falls back to a default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
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
	// SystemdCgroup makes runc use the systemd cgroup driver.
	SystemdCgroup bool `toml:"systemd_cgroup"`
	// LogLevel is the level of the shim's log: trace, debug, info, warn or error.
	LogLevel string `toml:"log_level"`
}

// Default returns the configuration used when no file exists.
func Default() Config {
	return Config{Runc: "runc", Criu: "criu", LogLevel: "info"}
}

var logLevels = []string{"trace", "debug", "info", "warn", "error"}

// Parse reads a configuration from TOML text. source names the text in errors (a path).
func Parse(data []byte, source string) (Config, error) {
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

// Load reads the configuration at path ("" for the default: $WARM_CONFIG, else
// DefaultPath). A missing file at DefaultPath yields the defaults; a missing file anywhere
// else is an error (the user named it).
func Load(path string) (Config, error) {
	if path == "" {
		path = os.Getenv(EnvPath)
	}
	if path == "" {
		path = DefaultPath
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && path == DefaultPath {
			return Default(), nil
		}
		return Config{}, fmt.Errorf("warm config: %w", err)
	}
	return Parse(data, path)
}

// Validate checks values that TOML types alone cannot.
func (c Config) Validate() error {
	if c.Runc == "" {
		return errors.New(`key runc: must name the runc binary (a name in PATH or an absolute path), e.g. runc = "runc"`)
	}
	if c.Criu == "" {
		return errors.New(`key criu: must name the CRIU binary (a name in PATH or an absolute path), e.g. criu = "criu"`)
	}
	if c.RuncRoot != "" && !filepath.IsAbs(c.RuncRoot) {
		return fmt.Errorf("key runc_root: %q must be an absolute path", c.RuncRoot)
	}
	if !contains(logLevels, c.LogLevel) {
		return fmt.Errorf("key log_level: %q is not one of %s", c.LogLevel, strings.Join(logLevels, ", "))
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

func allowedKeys() []string {
	keys := []string{"runc", "runc_root", "criu", "systemd_cgroup", "log_level"}
	sort.Strings(keys)
	return keys
}
