package oci

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Verdict says how a request naming a template may be served.
type Verdict struct {
	// Pool: a frozen sandbox of the template may be adopted.
	Pool bool
	// Restore: if not from the pool, restoring the template's checkpoint into the
	// request's own container is correct.
	Restore bool
	// Reason names the first difference that rules out the pool (empty when Pool).
	Reason string
	// Rebind lists the request's per-container network files (/etc/hosts,
	// /etc/resolv.conf, /etc/hostname) whose source differs from the template's: adoption
	// binds them over the sandbox's.
	Rebind []specs.Mount
}

// Compare decides whether a request (its spec and the identity of its image layers) may
// be served from a template made from tmpl on tmplLayers. Environment variables named
// in allowEnv may differ (the sandbox keeps the template's values). A wrong sandbox is
// never served: anything the restored process already holds and cannot change (process,
// image, mounts, namespaces, security settings) must match.
func Compare(tmpl *specs.Spec, tmplLayers string, req *specs.Spec, reqLayers string, allowEnv []string) Verdict {
	if reason := sameProcess(tmpl, tmplLayers, req, reqLayers, allowEnv); reason != "" {
		return Verdict{Reason: reason}
	}
	// The checkpoint matches the request: restoring it into the request's container is
	// correct from here on; adopting a pooled sandbox needs more.
	v := Verdict{Restore: true}
	// A restore brings back the template's UTS namespace: runc sets the hostname only
	// when it starts a container cold. Adoption sets it.
	if ownNamespace(req.Linux.Namespaces, specs.UTSNamespace) && req.Hostname != tmpl.Hostname {
		v.Restore = false
	}
	for i, m := range req.Mounts {
		if isNetworkFile(m) && m.Source != tmpl.Mounts[i].Source {
			v.Rebind = append(v.Rebind, m)
		}
	}
	joins, bindDiff := joined(req.Linux.Namespaces), bindSourcesDiffer(tmpl.Mounts, req.Mounts)
	switch {
	case req.Process.Terminal:
		v.Reason, v.Restore = "tty requested", false
	case req.Hostname != "" && !hasNamespace(req, specs.UTSNamespace):
		// runc refuses it ("unable to set hostname without a private UTS namespace").
		v.Reason, v.Restore = "hostname without a UTS namespace", false
	case joins != "":
		v.Reason = "request joins an existing " + joins + " namespace (e.g. a pod's); a pooled sandbox has namespaces of its own"
	case bindDiff != "":
		v.Reason = "bind mount source of " + bindDiff + " differs (a pooled sandbox has the template's mounted)"
	case req.Linux.CgroupsPath == "" || strings.Contains(req.Linux.CgroupsPath, ":"):
		v.Reason = "systemd cgroup path (pooled sandboxes move between cgroupfs paths)"
	case !strings.HasPrefix(req.Linux.CgroupsPath, "/"):
		// runc puts a relative path under its own cgroup; adoption would not.
		v.Reason = "relative cgroup path (pooled sandboxes move between absolute cgroupfs paths)"
	case req.Hooks != nil && (len(req.Hooks.CreateContainer) > 0 || len(req.Hooks.StartContainer) > 0):
		v.Reason = "createContainer/startContainer hooks (they run inside the container at create)"
	case !jsonEqual(tmpl.Process.ExecCPUAffinity, req.Process.ExecCPUAffinity):
		// runc exec applies the affinity of the container's runc state, which for a pooled
		// sandbox is the template's; a restore writes the request's.
		v.Reason = "exec CPU affinity differs (runc exec would apply the template's in a pooled sandbox)"
	default:
		v.Pool = true
	}
	return v
}

func sameProcess(t *specs.Spec, tl string, r *specs.Spec, rl string, allowEnv []string) string {
	switch {
	case t == nil || t.Process == nil || t.Linux == nil:
		return "template has no process"
	case r == nil || r.Process == nil || r.Linux == nil:
		return "request has no process"
	case tl == "" || tl != rl:
		return "image layers differ"
	case !reflect.DeepEqual(t.Process.Args, r.Process.Args):
		return "process args differ"
	case t.Process.Cwd != r.Process.Cwd:
		return "cwd differs"
	case !jsonEqual(t.Process.User, r.Process.User): // additionalGids [] and absent are the same
		return "user differs"
	case !jsonEqual(t.Process.Capabilities, r.Process.Capabilities):
		return "capabilities differ"
	case !jsonEqual(t.Process.Rlimits, r.Process.Rlimits):
		return "rlimits differ"
	case t.Process.NoNewPrivileges != r.Process.NoNewPrivileges:
		return "no_new_privileges differs"
	case t.Process.ApparmorProfile != r.Process.ApparmorProfile || t.Process.SelinuxLabel != r.Process.SelinuxLabel ||
		t.Linux.MountLabel != r.Linux.MountLabel:
		return "security labels differ"
	// The restored process keeps the template's values of these (CRIU restores them, and
	// neither runc's restore nor adoption sets them again).
	case !reflect.DeepEqual(t.Process.OOMScoreAdj, r.Process.OOMScoreAdj):
		return "oom_score_adj differs"
	case !jsonEqual(t.Process.IOPriority, r.Process.IOPriority):
		return "io priority differs"
	case !jsonEqual(t.Process.Scheduler, r.Process.Scheduler):
		return "scheduler differs"
	case !jsonEqual(t.Linux.Personality, r.Linux.Personality):
		return "personality differs"
	case !jsonEqual(t.Linux.MemoryPolicy, r.Linux.MemoryPolicy):
		return "memory policy differs"
	case !jsonEqual(t.Linux.TimeOffsets, r.Linux.TimeOffsets):
		return "time namespace offsets differ"
	case !jsonEqual(t.Linux.UIDMappings, r.Linux.UIDMappings) || !jsonEqual(t.Linux.GIDMappings, r.Linux.GIDMappings):
		return "user namespace ID mappings differ"
	// Device nodes come from the template's /dev, and adoption gives a migrated cgroup the
	// template's device rules.
	case !jsonEqual(t.Linux.Devices, r.Linux.Devices):
		return "devices differ"
	case !jsonEqual(deviceRules(t.Linux.Resources), deviceRules(r.Linux.Resources)):
		return "device cgroup rules differ"
	case !jsonEqual(t.Linux.IntelRdt, r.Linux.IntelRdt):
		return "intelRdt differs"
	case !jsonEqual(t.Linux.NetDevices, r.Linux.NetDevices):
		return "net devices differ"
	case t.Linux.RootfsPropagation != r.Linux.RootfsPropagation:
		return "rootfs propagation differs"
	case t.Domainname != r.Domainname:
		return "domainname differs"
	case !jsonEqual(t.Linux.Seccomp, r.Linux.Seccomp):
		return "seccomp differs"
	case !jsonEqual(t.Linux.MaskedPaths, r.Linux.MaskedPaths) || !jsonEqual(t.Linux.ReadonlyPaths, r.Linux.ReadonlyPaths):
		return "masked or read-only paths differ"
	case !rootEqual(t.Root, r.Root):
		return "read-only root differs"
	case !jsonEqual(mountsForCompare(t.Mounts), mountsForCompare(r.Mounts)):
		return "mounts differ"
	case !jsonEqual(t.Linux.Sysctl, r.Linux.Sysctl):
		return "sysctls differ"
	}
	if d := envDiff(t.Process.Env, r.Process.Env, allowEnv); d != "" {
		return "environment differs: " + d
	}
	if d := nsDiff(t.Linux.Namespaces, r.Linux.Namespaces); d != "" {
		return d
	}
	return ""
}

func deviceRules(r *specs.LinuxResources) []specs.LinuxDeviceCgroup {
	if r == nil {
		return nil
	}
	return r.Devices
}

func rootEqual(a, b *specs.Root) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Readonly == b.Readonly
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb) || (isEmpty(ja) && isEmpty(jb))
}

func isEmpty(j []byte) bool {
	s := string(j)
	return s == "null" || s == "[]" || s == "{}"
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		m[k] = v
	}
	return m
}

// envDiff names the first variable that differs and is not allowed to.
func envDiff(t, r, allow []string) string {
	tm, rm := envMap(t), envMap(r)
	ok := map[string]bool{}
	for _, a := range allow {
		ok[a] = true
	}
	var keys []string
	for k := range tm {
		keys = append(keys, k)
	}
	for k := range rm {
		if _, seen := tm[k]; !seen {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		tv, tok := tm[k]
		rv, rok := rm[k]
		if tok == rok && tv == rv {
			continue
		}
		if ok[k] {
			continue
		}
		return fmt.Sprintf("%s (allow it with allow_env in the pool config if the application does not read it at start)", k)
	}
	return ""
}

// nsDiff: the request must use the same kinds of namespaces, and join an existing one
// (a pod's, by path) exactly where the template did. runc checkpoints a joined network
// or PID namespace as external and restores into the request's; a namespace of the
// container's own is in the checkpoint and is recreated by CRIU, so it cannot become a
// pod's, nor a pod's namespace the container's own.
func nsDiff(t, r []specs.LinuxNamespace) string {
	kinds := func(ns []specs.LinuxNamespace) []string {
		var k []string
		for _, n := range ns {
			if n.Path != "" {
				k = append(k, string(n.Type)+" (joined)")
			} else {
				k = append(k, string(n.Type))
			}
		}
		sort.Strings(k)
		return k
	}
	tk, rk := kinds(t), kinds(r)
	if reflect.DeepEqual(tk, rk) {
		return ""
	}
	for _, n := range r {
		for _, m := range t {
			if n.Type == m.Type && (n.Path == "") != (m.Path == "") {
				if n.Path != "" {
					return fmt.Sprintf("request joins an existing %s namespace (e.g. a pod's), the template had its own: make the template in a pod", n.Type)
				}
				return fmt.Sprintf("template joined an existing %s namespace (a pod's), the request has its own", n.Type)
			}
		}
	}
	return "namespaces differ"
}

// ownNamespace reports whether ns creates a namespace of type typ (rather than joining
// one or sharing the runtime's).
func ownNamespace(ns []specs.LinuxNamespace, typ specs.LinuxNamespaceType) bool {
	for _, n := range ns {
		if n.Type == typ && n.Path == "" {
			return true
		}
	}
	return false
}

// joined names the first namespace a spec joins by path ("" when none).
func joined(ns []specs.LinuxNamespace) string {
	for _, n := range ns {
		if n.Path != "" {
			return string(n.Type)
		}
	}
	return ""
}

// isBind: runc treats a mount with a bind option (or of type bind) as a bind mount,
// checkpoints it as external and, at restore, mounts the request's source at its
// destination.
func isBind(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// bindSourcesDiffer names the destination of the first bind mount (other than the
// per-container network files adoption rebinds) whose source differs.
func bindSourcesDiffer(t, r []specs.Mount) string {
	for i, m := range r {
		if i < len(t) && isBind(m) && !isNetworkFile(m) && m.Source != t[i].Source {
			return m.Destination
		}
	}
	return ""
}

// LayersOf identifies the image layers of a rootfs mount list: the overlay lowerdir
// (the same layers give the same list), or the source of a bind mount.
func LayersOf(mounts []MountInfo) string {
	for _, m := range mounts {
		for _, o := range m.Options {
			if strings.HasPrefix(o, "lowerdir=") {
				return strings.TrimPrefix(o, "lowerdir=")
			}
		}
	}
	if len(mounts) == 1 {
		return mounts[0].Type + ":" + mounts[0].Source
	}
	return ""
}

// MountInfo is the part of a rootfs mount LayersOf reads.
type MountInfo struct {
	Type, Source string
	Options      []string
}

// mountsForCompare drops the sources of bind mounts: a restore mounts the request's
// (runc maps bind mounts by destination); the pool's own check is bindSourcesDiffer.
func mountsForCompare(ms []specs.Mount) []specs.Mount {
	out := make([]specs.Mount, len(ms))
	for i, m := range ms {
		if isBind(m) {
			m.Source = ""
		}
		out[i] = m
	}
	return out
}
