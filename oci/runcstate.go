package oci

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// runcState is runc's state.json, kept as raw JSON except the fields warm rewrites, so
// fields it does not know survive the rewrite untouched.
type runcState map[string]json.RawMessage

func readRuncState(dir string) (runcState, error) {
	s, _, err := readRuncStateStamped(dir)
	return s, err
}

// stateStamp identifies one version of a state.json: runc saves its state by writing a
// new file and renaming it over the old one, so a save changes the inode.
type stateStamp struct {
	ino   uint64
	size  int64
	mtime int64
}

func stampOf(fi os.FileInfo) stateStamp {
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st == nil {
		return stateStamp{}
	}
	return stateStamp{ino: st.Ino, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
}

// readRuncStateStamped reads runc's state in dir and the stamp of the file it read.
func readRuncStateStamped(dir string) (runcState, stateStamp, error) {
	f, err := os.Open(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, stateStamp{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, stateStamp{}, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, stateStamp{}, err
	}
	var s runcState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, stateStamp{}, fmt.Errorf("runc state %s: %w", dir, err)
	}
	return s, stampOf(fi), nil
}

// stateRewrite is the file adoption writes runc's new state in before renaming it over
// state.json. A sandbox's restore creates it empty, so that a hit's rewrite allocates no
// inode (on a disk file system, finding a free inode is most of the rewrite's time).
const stateRewrite = "state.json.warm"

// keptState is a sandbox's runc state as its restore left it, parsed once, so that its
// adoption neither reads nor parses it again while the file is the same.
type keptState struct {
	state runcState
	cfg   map[string]json.RawMessage // state["config"]
	stamp stateStamp
}

// keepRuncState parses runc's state in dir for a later adoption (adoptionState) and
// creates the file the adoption writes the new state in.
func keepRuncState(dir string) (*keptState, error) {
	k, err := readKeptState(dir)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, stateRewrite), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	return k, f.Close()
}

// adoptionState is runc's state in dir: k if state.json is still the file k was read
// from, else read again.
func adoptionState(dir string, k *keptState) (*keptState, error) {
	if k != nil {
		if fi, err := os.Stat(filepath.Join(dir, "state.json")); err == nil && stampOf(fi) == k.stamp && k.stamp != (stateStamp{}) {
			return k, nil
		}
	}
	return readKeptState(dir)
}

func readKeptState(dir string) (*keptState, error) {
	st, stamp, err := readRuncStateStamped(dir)
	if err != nil {
		return nil, err
	}
	k := &keptState{state: st, stamp: stamp}
	if err := json.Unmarshal(st["config"], &k.cfg); err != nil {
		return nil, fmt.Errorf("runc state config: %w", err)
	}
	return k, nil
}

// cgroupsPath is the container's cgroup (config.cgroups.path).
func (k *keptState) cgroupsPath() (string, error) {
	var cg struct {
		Path string `json:"path"`
	}
	if err := json.Unmarshal(k.cfg["cgroups"], &cg); err != nil {
		return "", fmt.Errorf("runc state cgroups: %w", err)
	}
	return cg.Path, nil
}

// deviceRules are the device cgroup rules runc gave the container (config.cgroups.devices:
// the spec's rules and runc's default devices), as spec rules.
func (k *keptState) deviceRules() ([]specs.LinuxDeviceCgroup, error) {
	type rule struct {
		Type        rune   `json:"type"`
		Major       int64  `json:"major"`
		Minor       int64  `json:"minor"`
		Permissions string `json:"permissions"`
		Allow       bool   `json:"allow"`
	}
	// runc inlines the resources in config.cgroups; older ones nest them.
	var cg struct {
		Devices   []rule `json:"devices"`
		Resources struct {
			Devices []rule `json:"devices"`
		} `json:"resources"`
	}
	if err := json.Unmarshal(k.cfg["cgroups"], &cg); err != nil {
		return nil, fmt.Errorf("runc state cgroups: %w", err)
	}
	if len(cg.Devices) == 0 {
		cg.Devices = cg.Resources.Devices
	}
	rules := make([]specs.LinuxDeviceCgroup, 0, len(cg.Devices))
	for _, d := range cg.Devices {
		// A wildcard major or minor is -1, as in the OCI spec runc was given (and what
		// cgroup2's device filter expects: it reads both of every rule).
		r := specs.LinuxDeviceCgroup{Allow: d.Allow, Type: string(d.Type), Access: d.Permissions, Major: &d.Major, Minor: &d.Minor}
		switch r.Type {
		case "a", "b", "c":
		default:
			return nil, fmt.Errorf("runc state cgroups: device rule of type %q", r.Type)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func (s runcState) cgroupPaths() (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal(s["cgroup_paths"], &m); err != nil {
		return nil, fmt.Errorf("runc state cgroup_paths: %w", err)
	}
	return m, nil
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
func renameRuncContainer(root, oldID, newID string, kept *keptState, cgroupPaths map[string]string, cgroupsPath, bundle string, spec *specs.Spec) error {
	oldDir, newDir := filepath.Join(root, oldID), filepath.Join(root, newID)
	// kept stays as it was read: the rewrite works on copies of the maps it changes.
	st, cfg := maps.Clone(kept.state), maps.Clone(kept.cfg)
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
	// runc records when a container was created (runc list's CREATED): a sandbox's restore
	// is not the container's creation; its adoption is.
	if err := set("created", time.Now().UTC()); err != nil {
		return err
	}
	var cg map[string]json.RawMessage
	if err := json.Unmarshal(cfg["cgroups"], &cg); err != nil {
		return fmt.Errorf("runc state cgroups: %w", err)
	}
	cg["path"], _ = json.Marshal(cgroupsPath)
	if spec.Linux != nil {
		if err := setRuncResources(cg, spec.Linux.Resources); err != nil {
			return fmt.Errorf("runc state resources: %w", err)
		}
	}
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
	st["config"] = encodeObject(cfg)
	data := encodeObject(st)
	if _, err := os.Stat(newDir); err == nil {
		return fmt.Errorf("runc container %s already exists", newID)
	}
	// Write the new state beside the old, then rename the directory: runc never sees a
	// directory whose name and state disagree.
	tmp := filepath.Join(oldDir, stateRewrite)
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(oldDir, "state.json")); err != nil {
		return err
	}
	return os.Rename(oldDir, newDir)
}

// encodeObject is json.Marshal of m for values that are valid JSON already (read by
// json.Unmarshal or written by json.Marshal), without Marshal's second pass over each
// value to check and compact it: runc's config is most of its state, and adoption writes
// it whole on every hit.
func encodeObject(m map[string]json.RawMessage) json.RawMessage {
	keys := slices.Sorted(maps.Keys(m))
	n := 2
	for _, k := range keys {
		n += len(k) + len(m[k]) + 8
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		kb, _ := json.Marshal(k) // a string always encodes
		b = append(b, kb...)
		b = append(b, ':')
		if v := m[k]; len(v) > 0 {
			b = append(b, v...)
		} else {
			b = append(b, "null"...)
		}
	}
	return append(b, '}')
}
