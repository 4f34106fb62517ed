package oci

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func baseSpec() *specs.Spec {
	return &specs.Spec{
		Process: &specs.Process{Args: []string{"/app"}, Cwd: "/", Env: []string{"PATH=/bin", "MODE=prod"}},
		Root:    &specs.Root{Path: "rootfs"},
		Mounts:  []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}},
		Linux: &specs.Linux{CgroupsPath: "/ns/c1", Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.MountNamespace}}},
	}
}

func clone(s *specs.Spec) *specs.Spec {
	var c specs.Spec
	b, _ := json.Marshal(s)
	_ = json.Unmarshal(b, &c)
	return &c
}

func TestCompare(t *testing.T) {
	cases := []struct {
		name          string
		change        func(*specs.Spec)
		layers        string
		allowEnv      []string
		pool, restore bool
		reason        string
	}{
		{name: "identical", change: func(*specs.Spec) {}, pool: true, restore: true},
		{name: "other cgroup is fine", change: func(s *specs.Spec) { s.Linux.CgroupsPath = "/ns/c2" }, pool: true, restore: true},
		{name: "relative cgroup path", change: func(s *specs.Spec) { s.Linux.CgroupsPath = "ns/c2" }, restore: true, reason: "relative cgroup path"},
		{name: "other image", change: func(*specs.Spec) {}, layers: "other", reason: "image layers differ"},
		{name: "args", change: func(s *specs.Spec) { s.Process.Args = []string{"/other"} }, reason: "process args differ"},
		{name: "env", change: func(s *specs.Spec) { s.Process.Env[1] = "MODE=dev" }, reason: "environment differs: MODE"},
		{name: "allowed env", change: func(s *specs.Spec) { s.Process.Env[1] = "MODE=dev" }, allowEnv: []string{"MODE"}, pool: true, restore: true},
		{name: "extra env", change: func(s *specs.Spec) { s.Process.Env = append(s.Process.Env, "X=1") }, reason: "environment differs: X"},
		{name: "user", change: func(s *specs.Spec) { s.Process.User.UID = 1000 }, reason: "user differs"},
		{name: "mounts", change: func(s *specs.Spec) { s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data"}) }, reason: "mounts differ"},
		{name: "seccomp", change: func(s *specs.Spec) { s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_ERRNO"} }, reason: "seccomp differs"},
		{name: "pod netns", change: func(s *specs.Spec) { s.Linux.Namespaces[1].Path = "/var/run/netns/pod" }, reason: "request joins an existing network namespace"},
		{name: "pod template, pod request", change: func(s *specs.Spec) { s.Linux.Namespaces[1].Path = "/var/run/netns/pod2" }, restore: true, reason: "request joins an existing network namespace (e.g. a pod's); a pooled sandbox"},
		{name: "pod template, own netns", change: func(s *specs.Spec) { s.Linux.Namespaces[1].Path = "" }, reason: "template joined an existing network namespace"},
		{name: "volume source", change: func(s *specs.Spec) { s.Mounts[1].Source = "/vol/c2" }, restore: true, reason: "bind mount source of /data differs"},
		{name: "volume options", change: func(s *specs.Spec) { s.Mounts[1].Options = []string{"rbind", "ro"} }, reason: "mounts differ"},
		{name: "fewer namespaces", change: func(s *specs.Spec) { s.Linux.Namespaces = s.Linux.Namespaces[:2] }, reason: "namespaces differ"},
		{name: "network files rebound", change: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/etc/hosts", Type: "bind", Source: "/c2/hosts"})
		}, pool: true, restore: true},
		{name: "tty", change: func(s *specs.Spec) { s.Process.Terminal = true }, reason: "tty"},
		{name: "systemd cgroup", change: func(s *specs.Spec) { s.Linux.CgroupsPath = "system.slice:warm:c1" }, restore: true, reason: "systemd"},
		{name: "createContainer hook", change: func(s *specs.Spec) { s.Hooks = &specs.Hooks{CreateContainer: []specs.Hook{{Path: "/h"}}} }, restore: true, reason: "createContainer"},
		{name: "exec CPU affinity", change: func(s *specs.Spec) { s.Process.ExecCPUAffinity = &specs.CPUAffinity{Final: "1"} }, restore: true, reason: "exec CPU affinity differs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := baseSpec()
			switch tc.name {
			case "pod template, pod request", "pod template, own netns":
				tmpl.Linux.Namespaces[1].Path = "/var/run/netns/pod1"
			case "volume source", "volume options":
				tmpl.Mounts = append(tmpl.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: "/vol/c1", Options: []string{"rbind"}})
			}
			req := clone(tmpl)
			tc.change(req)
			if tc.name == "network files rebound" {
				tmpl.Mounts = append(tmpl.Mounts, specs.Mount{Destination: "/etc/hosts", Type: "bind", Source: "/c1/hosts"})
			}
			layers := "l1:l2"
			if tc.layers != "" {
				layers = tc.layers
			}
			v := Compare(tmpl, "l1:l2", req, layers, tc.allowEnv)
			if v.Pool != tc.pool || v.Restore != tc.restore || !strings.Contains(v.Reason, tc.reason) {
				t.Fatalf("got %+v, want pool=%v restore=%v reason~%q", v, tc.pool, tc.restore, tc.reason)
			}
			if v.Pool && v.Reason != "" {
				t.Fatalf("a pool verdict with a reason: %+v", v)
			}
			if tc.name == "network files rebound" && (len(v.Rebind) != 1 || v.Rebind[0].Source != "/c2/hosts") {
				t.Fatalf("rebind %+v", v.Rebind)
			}
		})
	}
}

func TestLayersOf(t *testing.T) {
	got := LayersOf([]MountInfo{{Type: "overlay", Options: []string{"index=off", "lowerdir=/s/2/fs:/s/1/fs", "upperdir=/s/3/fs"}}})
	if got != "/s/2/fs:/s/1/fs" {
		t.Fatalf("got %q", got)
	}
}

// TestCompareFieldsTheSandboxKeeps: a restored process keeps what CRIU restores and what
// neither runc's restore nor adoption sets again, so a request that differs in one of
// these is served neither from the pool nor by a restore.
func TestCompareFieldsTheSandboxKeeps(t *testing.T) {
	adj := 1000
	userns := func(s *specs.Spec) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
		s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	}
	timens := func(s *specs.Spec) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.TimeNamespace})
	}
	rows := []struct {
		name   string
		tmpl   func(*specs.Spec)
		change func(*specs.Spec)
		reason string
	}{
		{"uid mappings", userns, func(s *specs.Spec) { s.Linux.UIDMappings[0].HostID = 200000 }, "user namespace ID mappings differ"},
		{"gid mappings", userns, func(s *specs.Spec) { s.Linux.GIDMappings[0].HostID = 200000 }, "user namespace ID mappings differ"},
		{"oom_score_adj", nil, func(s *specs.Spec) { s.Process.OOMScoreAdj = &adj }, "oom_score_adj differs"},
		{"linux.devices", nil, func(s *specs.Spec) {
			s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229}}
		}, "devices differ"},
		{"resources.devices", nil, func(s *specs.Spec) {
			s.Linux.Resources = &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}}
		}, "device cgroup rules differ"},
		{"io priority", nil, func(s *specs.Spec) { s.Process.IOPriority = &specs.LinuxIOPriority{Class: specs.IOPRIO_CLASS_IDLE} }, "io priority differs"},
		{"scheduler", nil, func(s *specs.Spec) { s.Process.Scheduler = &specs.Scheduler{Policy: specs.SchedIdle} }, "scheduler differs"},
		{"personality", nil, func(s *specs.Spec) { s.Linux.Personality = &specs.LinuxPersonality{Domain: specs.PerLinux32} }, "personality differs"},
		{"time offsets", timens, func(s *specs.Spec) {
			s.Linux.TimeOffsets = map[string]specs.LinuxTimeOffset{"monotonic": {Secs: 86400}}
		}, "time namespace offsets differ"},
		{"intelRdt", nil, func(s *specs.Spec) { s.Linux.IntelRdt = &specs.LinuxIntelRdt{ClosID: "gold"} }, "intelRdt differs"},
		{"memory policy", nil, func(s *specs.Spec) {
			s.Linux.MemoryPolicy = &specs.LinuxMemoryPolicy{Mode: specs.MpolBind, Nodes: "1"}
		}, "memory policy differs"},
		{"net devices", nil, func(s *specs.Spec) { s.Linux.NetDevices = map[string]specs.LinuxNetDevice{"eth1": {}} }, "net devices differ"},
		{"domainname", nil, func(s *specs.Spec) { s.Domainname = "example.org" }, "domainname differs"},
		{"mount label", nil, func(s *specs.Spec) { s.Linux.MountLabel = "system_u:object_r:container_file_t:s0:c1,c2" }, "security labels differ"},
		{"rootfs propagation", nil, func(s *specs.Spec) { s.Linux.RootfsPropagation = "rshared" }, "rootfs propagation differs"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			tmpl := baseSpec()
			if r.tmpl != nil {
				r.tmpl(tmpl)
			}
			// The same on both sides is served.
			if v := Compare(tmpl, "l1:l2", clone(tmpl), "l1:l2", nil); !v.Pool || !v.Restore {
				t.Fatalf("identical request refused: %+v", v)
			}
			req := clone(tmpl)
			r.change(req)
			v := Compare(tmpl, "l1:l2", req, "l1:l2", nil)
			if v.Pool || v.Restore || v.Reason != r.reason {
				t.Errorf("got %+v, want neither pool nor restore, reason %q", v, r.reason)
			}
		})
	}
}

// TestCompareHostname: adoption sets the request's hostname; a restore keeps the
// template's (its UTS namespace), so a request with a UTS namespace of its own and
// another hostname is not restored. One that joins a pod's UTS namespace has the pod's.
func TestCompareHostname(t *testing.T) {
	tmpl := baseSpec()
	tmpl.Linux.Namespaces = append(tmpl.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UTSNamespace})
	tmpl.Hostname = "tmpl"
	req := clone(tmpl)
	req.Hostname = "c2"
	if v := Compare(tmpl, "l1:l2", req, "l1:l2", nil); !v.Pool || v.Restore {
		t.Errorf("own UTS namespace, other hostname: %+v, want pool and no restore", v)
	}
	req.Hostname = "tmpl"
	if v := Compare(tmpl, "l1:l2", req, "l1:l2", nil); !v.Pool || !v.Restore {
		t.Errorf("same hostname: %+v", v)
	}
}

// TestCompareEmptyAdditionalGids: "additionalGids": [] and none are the same user.
func TestCompareEmptyAdditionalGids(t *testing.T) {
	tmpl := baseSpec()
	req := clone(tmpl)
	req.Process.User.AdditionalGids = []uint32{}
	if v := Compare(tmpl, "l1:l2", req, "l1:l2", nil); !v.Pool {
		t.Errorf("refused: %+v", v)
	}
}

// TestCompareHostnameWithoutUTS: a request that names a hostname but has no UTS
// namespace is one runc refuses: it is neither pooled nor restored (cold, runc says why).
func TestCompareHostnameWithoutUTS(t *testing.T) {
	tmpl := baseSpec() // no UTS namespace
	req := clone(tmpl)
	req.Hostname = "x"
	if v := Compare(tmpl, "l1:l2", req, "l1:l2", nil); v.Pool || v.Restore {
		t.Fatalf("%+v", v)
	}
}

// TestCompareKnowsEverySpecField fails when the runtime-spec module gains a field that
// Compare has not been taught about (an upgrade of the module): each field of a request
// is either compared with the template's, applied to the sandbox at adoption, or does
// not reach the restored process. A field nobody classified could let a pooled sandbox
// keep the template's value where a cold container would have the request's.
func TestCompareKnowsEverySpecField(t *testing.T) {
	const (
		compared = "compared"
		applied  = "applied at adoption"
		noEffect = "does not reach the restored process"
	)
	known := map[string]string{
		"ociVersion":                  noEffect,
		"process":                     compared,
		"process.terminal":            compared, // a tty is refused
		"process.consoleSize":         noEffect, // tty only, and a tty is refused
		"process.user":                compared,
		"process.user.uid":            compared,
		"process.user.gid":            compared,
		"process.user.umask":          compared,
		"process.user.additionalGids": compared,
		"process.user.username":       compared, // Windows; compared with the user anyway
		"process.args":                compared,
		"process.commandLine":         noEffect, // Windows
		"process.env":                 compared,
		"process.cwd":                 compared,
		"process.capabilities":        compared,
		"process.rlimits":             compared,
		"process.noNewPrivileges":     compared,
		"process.apparmorProfile":     compared,
		"process.oomScoreAdj":         compared,
		"process.scheduler":           compared,
		"process.selinuxLabel":        compared,
		"process.ioPriority":          compared,
		"process.execCPUAffinity":     compared,
		"root":                        compared,
		"root.path":                   compared, // the image's layers (LayersOf), not the path
		"root.readonly":               compared,
		"hostname":                    applied,
		"domainname":                  compared,
		"mounts":                      compared, // network files are rebound at adoption
		"hooks":                       applied,
		"hooks.prestart":              applied,
		"hooks.createRuntime":         applied,
		"hooks.createContainer":       compared, // refused for the pool
		"hooks.startContainer":        compared, // refused for the pool
		"hooks.poststart":             applied,
		"hooks.poststop":              applied,
		"annotations":                 applied, // runc's labels, the hooks' state
		"linux":                       compared,
		"linux.uidMappings":           compared,
		"linux.gidMappings":           compared,
		"linux.sysctl":                compared,
		"linux.resources":             applied, // device rules compared
		"linux.cgroupsPath":           applied,
		"linux.namespaces":            compared,
		"linux.devices":               compared,
		"linux.netDevices":            compared,
		"linux.seccomp":               compared,
		"linux.rootfsPropagation":     compared,
		"linux.maskedPaths":           compared,
		"linux.readonlyPaths":         compared,
		"linux.mountLabel":            compared,
		"linux.intelRdt":              compared,
		"linux.memoryPolicy":          compared,
		"linux.personality":           compared,
		"linux.timeOffsets":           compared,
		"solaris":                     noEffect,
		"windows":                     noEffect,
		"vm":                          noEffect,
		"zos":                         noEffect,
		"freebsd":                     noEffect,
	}
	// The structs whose fields are classified one by one; a field of any other struct is
	// classified with the struct that holds it.
	walkInto := map[string]bool{"process": true, "process.user": true, "root": true, "hooks": true, "linux": true}
	seen := map[string]bool{}
	var walk func(typ reflect.Type, prefix string)
	walk = func(typ reflect.Type, prefix string) {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				t.Errorf("%s%s has no JSON name: classify it by hand", prefix, f.Name)
				continue
			}
			path := prefix + name
			seen[path] = true
			if _, ok := known[path]; !ok {
				t.Errorf("spec field %s is new to Compare: compare it with the template's, apply it at adoption, or say why it does not reach the restored process", path)
			}
			if walkInto[path] {
				walk(f.Type, path+".")
			}
		}
	}
	walk(reflect.TypeOf(specs.Spec{}), "")
	for path := range known {
		if !seen[path] {
			t.Errorf("classified field %s is not in the runtime-spec module any more", path)
		}
	}
}
