package oci

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// runcState is runc's state.json, kept as raw JSON except the fields warm rewrites, so
// fields it does not know survive the rewrite untouched.
type runcState map[string]json.RawMessage

func readRuncState(dir string) (runcState, error) {
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, err
	}
	var s runcState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("runc state %s: %w", dir, err)
	}
	return s, nil
}

func (s runcState) cgroupPaths() (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal(s["cgroup_paths"], &m); err != nil {
		return nil, fmt.Errorf("runc state cgroup_paths: %w", err)
	}
	return m, nil
}

// cgroupsPath is the container's cgroup (config.cgroups.path) in runc's state.
func (s runcState) cgroupsPath() (string, error) {
	var cfg struct {
		Cgroups struct {
			Path string `json:"path"`
		} `json:"cgroups"`
	}
	if err := json.Unmarshal(s["config"], &cfg); err != nil {
		return "", fmt.Errorf("runc state config: %w", err)
	}
	return cfg.Cgroups.Path, nil
}

// libcontainer's hook command (configs.Command).
type hookCommand struct {
	Path    string         `json:"path"`
	Args    []string       `json:"args"`
	Env     []string       `json:"env"`
	Dir     string         `json:"dir"`
	Timeout *time.Duration `json:"timeout"`
}

func convertHooks(h *specs.Hooks) map[string][]hookCommand {
	out := map[string][]hookCommand{}
	if h == nil {
		return out
	}
	add := func(name string, hs []specs.Hook) {
		for _, x := range hs {
			c := hookCommand{Path: x.Path, Args: x.Args, Env: x.Env}
			if x.Timeout != nil {
				d := time.Duration(*x.Timeout) * time.Second
				c.Timeout = &d
			}
			out[name] = append(out[name], c)
		}
	}
	add("prestart", h.Prestart) //nolint:staticcheck // runc still runs prestart hooks
	add("createRuntime", h.CreateRuntime)
	add("createContainer", h.CreateContainer)
	add("startContainer", h.StartContainer)
	add("poststart", h.Poststart)
	add("poststop", h.Poststop)
	return out
}

// renameRuncContainer makes the runc container oldID (in root) the container newID:
// its state directory is renamed and state.json says the new id, cgroups, bundle and
// hooks, so every later runc command (exec, pause, update, checkpoint, delete and its
// poststop hooks) acts on it as on a container created under newID.
func renameRuncContainer(root, oldID, newID string, st runcState, cgroupPaths map[string]string, cgroupsPath, bundle string, spec *specs.Spec) error {
	oldDir, newDir := filepath.Join(root, oldID), filepath.Join(root, newID)
	set := func(k string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		st[k] = b
		return nil
	}
	if err := set("id", newID); err != nil {
		return err
	}
	if err := set("cgroup_paths", cgroupPaths); err != nil {
		return err
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(st["config"], &cfg); err != nil {
		return fmt.Errorf("runc state config: %w", err)
	}
	var cg map[string]json.RawMessage
	if err := json.Unmarshal(cfg["cgroups"], &cg); err != nil {
		return fmt.Errorf("runc state cgroups: %w", err)
	}
	cg["path"], _ = json.Marshal(cgroupsPath)
	cfg["cgroups"], _ = json.Marshal(cg)
	cfg["Hooks"], _ = json.Marshal(convertHooks(spec.Hooks))
	// runc keeps the annotations and the bundle as labels; hooks get them as the state.
	labels := make([]string, 0, len(spec.Annotations)+1)
	for k, v := range spec.Annotations {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	cfg["labels"], _ = json.Marshal(append(labels, "bundle="+bundle))
	if spec.Hostname != "" {
		cfg["hostname"], _ = json.Marshal(spec.Hostname)
	}
	st["config"], _ = json.Marshal(cfg)
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if _, err := os.Stat(newDir); err == nil {
		return fmt.Errorf("runc container %s already exists", newID)
	}
	// Write the new state beside the old, then rename the directory: runc never sees a
	// directory whose name and state disagree.
	tmp := filepath.Join(oldDir, "state.json.warm")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(oldDir, "state.json")); err != nil {
		return err
	}
	return os.Rename(oldDir, newDir)
}
