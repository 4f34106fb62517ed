package oci

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A runc state.json as runc writes it, cut down to what adoption reads and rewrites plus
// fields it must leave alone.
const sampleState = `{"id":"warm-sb-1","init_process_pid":42,"cgroup_paths":{"memory":"/sys/fs/cgroup/memory/ns/warm-sb-1"},` +
	`"config":{"rootfs":"/b/rootfs","cgroups":{"path":"/ns/warm-sb-1","resources":{"devices":[]}},"labels":["bundle=/b"],"unknown_field":[1,2]},` +
	`"created":"2026-12-02T00:00:00Z"}`

func writeState(t *testing.T, dir, data string) {
	t.Helper()
	// As runc saves it: a new file renamed over the old one.
	tmp := filepath.Join(dir, "state-tmp")
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "state.json")); err != nil {
		t.Fatal(err)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestAdoptionStateKept: the state a restore kept is used while state.json is the file it
// was read from, and read again once runc saved another (even of the same size).
func TestAdoptionStateKept(t *testing.T) {
	dir := t.TempDir()
	writeState(t, dir, sampleState)
	kept, err := keepRuncState(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, stateRewrite))
	if err != nil || fi.Size() != 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("rewrite file: %v, %v", fi, err)
	}
	if p, err := kept.cgroupsPath(); err != nil || p != "/ns/warm-sb-1" {
		t.Fatalf("cgroupsPath %q, %v", p, err)
	}
	got, err := adoptionState(dir, kept)
	if err != nil || got != kept {
		t.Fatalf("unchanged state: got %p, %v; want the kept %p", got, err, kept)
	}
	writeState(t, dir, strings.Replace(sampleState, "warm-sb-1\",\"resources", "warm-sb-2\",\"resources", 1))
	got, err = adoptionState(dir, kept)
	if err != nil || got == kept {
		t.Fatalf("saved again: got %p, %v; want a new read", got, err)
	}
	if p, _ := got.cgroupsPath(); p != "/ns/warm-sb-2" {
		t.Errorf("re-read cgroupsPath %q", p)
	}
	if got, err = adoptionState(dir, nil); err != nil || got == nil {
		t.Errorf("nothing kept: %v, %v", got, err)
	}
}

// TestRenameRuncContainer: the new state says the new id, cgroups, bundle, hooks and
// hostname, keeps what it does not know, is written in the file the restore created (no
// new inode) and leaves the kept state untouched.
func TestRenameRuncContainer(t *testing.T) {
	root := t.TempDir()
	old := filepath.Join(root, "warm-sb-1")
	if err := os.Mkdir(old, 0o700); err != nil {
		t.Fatal(err)
	}
	writeState(t, old, sampleState)
	kept, err := keepRuncState(old)
	if err != nil {
		t.Fatal(err)
	}
	rewriteIno := inode(t, filepath.Join(old, stateRewrite))
	spec := &specs.Spec{Hostname: "h1", Annotations: map[string]string{"a": "b"},
		Hooks: &specs.Hooks{Poststop: []specs.Hook{{Path: "/bin/true"}}}}
	paths := map[string]string{"memory": "/sys/fs/cgroup/memory/ns/c1"}
	before := time.Now()
	if err := renameRuncContainer(root, "warm-sb-1", "c1", kept, paths, "/ns/c1", "/bundles/c1", spec); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("old state directory: %v", err)
	}
	path := filepath.Join(root, "c1", "state.json")
	if got := inode(t, path); got != rewriteIno {
		t.Errorf("state.json is inode %d, not the rewrite file the restore made (%d)", got, rewriteIno)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		ID          string            `json:"id"`
		Pid         int               `json:"init_process_pid"`
		CgroupPaths map[string]string `json:"cgroup_paths"`
		Created     time.Time         `json:"created"`
		Config      struct {
			Cgroups struct {
				Path      string          `json:"path"`
				Resources json.RawMessage `json:"resources"`
			} `json:"cgroups"`
			Labels   []string                 `json:"labels"`
			Hostname string                   `json:"hostname"`
			Hooks    map[string][]hookCommand `json:"Hooks"`
			Unknown  []int                    `json:"unknown_field"`
		} `json:"config"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	c := st.Config
	if st.ID != "c1" || st.Pid != 42 || st.CgroupPaths["memory"] != paths["memory"] || st.Created.Before(before) ||
		c.Cgroups.Path != "/ns/c1" || string(c.Cgroups.Resources) != `{"devices":[]}` ||
		strings.Join(c.Labels, " ") != "a=b bundle=/bundles/c1" || c.Hostname != "h1" ||
		len(c.Hooks["poststop"]) != 1 || c.Hooks["poststop"][0].Path != "/bin/true" || len(c.Unknown) != 2 {
		t.Errorf("new state: %s", data)
	}
	if string(kept.state["id"]) != `"warm-sb-1"` || !strings.Contains(string(kept.cfg["cgroups"]), "/ns/warm-sb-1") {
		t.Errorf("kept state changed: id %s, cgroups %s", kept.state["id"], kept.cfg["cgroups"])
	}
	// A second container cannot take the same id.
	if err := os.Mkdir(filepath.Join(root, "warm-sb-2"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeState(t, filepath.Join(root, "warm-sb-2"), sampleState)
	if err := renameRuncContainer(root, "warm-sb-2", "c1", kept, paths, "/ns/c1", "/b", spec); err == nil {
		t.Error("renamed over an existing container")
	}
}

// TestEncodeObject: what json.Marshal encodes, for values json.Unmarshal read.
func TestEncodeObject(t *testing.T) {
	for _, in := range []string{sampleState, `{}`, `{"b":null,"a":[1,{"x":"<&>"}],"é\"<k>":"v","n":1.5e3}`} {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(in), &m); err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got := encodeObject(m)
		if !strings.ContainsAny(in, "<&>") && string(got) != string(want) {
			t.Errorf("got  %s\nwant %s", got, want)
		}
		// Marshal also escapes <, & and > inside the values; they mean the same.
		var a, b any
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		_ = json.Unmarshal(want, &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("got  %s\nwant %s", got, want)
		}
	}
	if got := encodeObject(map[string]json.RawMessage{"a": nil}); string(got) != `{"a":null}` {
		t.Errorf("nil value: %s", got)
	}
}

// TestDeviceRules: runc's rules in its state (types as runes, -1 for a wildcard) become
// spec rules, and cgroup v1 lines as runc writes them.
func TestDeviceRules(t *testing.T) {
	k := &keptState{cfg: map[string]json.RawMessage{"cgroups": json.RawMessage(`{"path":"/x","devices":[
		{"type":97,"major":-1,"minor":-1,"permissions":"rwm","allow":false},
		{"type":99,"major":1,"minor":3,"permissions":"rwm","allow":true},
		{"type":99,"major":136,"minor":-1,"permissions":"rwm","allow":true},
		{"type":98,"major":-1,"minor":-1,"permissions":"m","allow":true}]}`)}}
	rules, err := k.deviceRules()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range rules {
		lines = append(lines, fmt.Sprintf("%v %s", r.Allow, deviceRuleLine(r)))
	}
	want := []string{"false a", "true c 1:3 rwm", "true c 136:* rwm", "true b *:* m"}
	if !slices.Equal(lines, want) {
		t.Fatalf("got %q, want %q", lines, want)
	}
	// cgroup v2: the same rules compile into the eBPF device program (its compiler
	// dereferences every rule's major and minor: wildcards once made it crash the
	// adoption), and so do rules with them unset.
	if _, _, err := cgroupsv2.DeviceFilter(wildcards(rules)); err != nil {
		t.Fatalf("device program: %v", err)
	}
	unset := []specs.LinuxDeviceCgroup{{Allow: false, Type: "a", Access: "rwm"}, {Allow: true, Type: "c", Access: "rwm"}}
	if _, _, err := cgroupsv2.DeviceFilter(wildcards(unset)); err != nil {
		t.Fatalf("device program of rules without major and minor: %v", err)
	}
	k.cfg["cgroups"] = json.RawMessage(`{"devices":[{"type":120,"major":1,"minor":1,"permissions":"r","allow":true}]}`)
	if _, err := k.deviceRules(); err == nil {
		t.Fatal("a rule of type x was accepted")
	}
}

// TestRenameRecordsResources: adoption records the request's limits in runc's state as
// runc's create does (inlined in config.cgroups, runc's names, shares also as a v2
// weight), replaces the sandbox's, and keeps the device rules and what it does not know.
func TestRenameRecordsResources(t *testing.T) {
	root := t.TempDir()
	old := filepath.Join(root, "warm-sb-1")
	if err := os.Mkdir(old, 0o700); err != nil {
		t.Fatal(err)
	}
	// runc 1.4's layout: the resources inlined; a stale limit to be replaced.
	state := strings.Replace(sampleState, `"resources":{"devices":[]}`,
		`"devices":[{"type":97,"major":-1,"minor":-1,"permissions":"rwm","allow":false}],"cpu_quota":7,"skip_devices_like_field":true`, 1)
	writeState(t, old, state)
	kept, err := keepRuncState(old)
	if err != nil {
		t.Fatal(err)
	}
	spec := &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}, // not recorded again
		Memory:  &specs.LinuxMemory{Limit: new(int64(96 << 20)), Swap: new(int64(-1))},
		CPU:     &specs.LinuxCPU{Shares: new(uint64(1024)), Period: new(uint64(100000)), Cpus: "0"},
		Pids:    &specs.LinuxPids{Limit: new(int64(50))},
		BlockIO: &specs.LinuxBlockIO{ThrottleReadBpsDevice: []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8, Minor: 0}, Rate: 1000}}},
	}}}
	if err := renameRuncContainer(root, "warm-sb-1", "c1", kept, nil, "/ns/c1", "/b", spec); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "c1", "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Config struct {
			Cgroups map[string]json.RawMessage `json:"cgroups"`
		} `json:"config"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for k, v := range st.Config.Cgroups {
		got[k] = string(v)
	}
	want := map[string]string{
		"path":                           `"/ns/c1"`,
		"devices":                        `[{"type":97,"major":-1,"minor":-1,"permissions":"rwm","allow":false}]`,
		"skip_devices_like_field":        `true`,
		"memory":                         `100663296`,
		"memory_swap":                    `-1`,
		"cpu_shares":                     `1024`,
		"cpu_weight":                     `100`, // runc's conversion of the default shares
		"cpu_period":                     `100000`,
		"cpuset_cpus":                    `"0"`,
		"pids_limit":                     `50`,
		"blkio_throttle_read_bps_device": `[{"major":8,"minor":0,"rate":1000}]`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config.cgroups:\n got %v\nwant %v", got, want)
	}
}
