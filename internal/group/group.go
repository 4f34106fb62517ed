// Package group decides which shim process a container belongs to. containerd runs the
// runtime's start action for every container; a container of a group joins the shim
// that serves the group. The shim and its start-up front (cmd/containerd-shim-warm-v2,
// which answers a join without loading the shim) both decide with it.
package group

import (
	"fmt"
	"strings"

	"github.com/warmshim/warm/internal/ident"
)

const (
	// Annotation puts containers that carry the same value into one shim process.
	Annotation = "io.containerd.warm.group"
	// TemplateAnnotation names a template (see the shim's annotations): every container
	// that makes or names one goes to the namespace's pool shim.
	TemplateAnnotation = "io.containerd.warm.template"
	// Pool is the group key of the namespace's pool shim (the socket address also
	// hashes the namespace).
	Pool = "warm-pool"
)

// annotations are read in order; the first present decides the shim a container joins.
var annotations = []string{Annotation, "io.kubernetes.cri.sandbox-id"}

// CRI's annotations on every container of a pod.
const (
	criContainerType = "io.kubernetes.cri.container-type" // "sandbox" or "container"
	criContainerName = "io.kubernetes.cri.container-name"
	warmPrefix       = "io.containerd.warm."
)

// Check reports whether the group annotation of scoped annotations (Scope) can name a
// shim: a value is a containerd identifier (letters, digits, '.', '_' and '-', at most
// 76), so never a path that leads to another namespace's shim.
func Check(scoped map[string]string) error {
	v, ok := scoped[Annotation]
	if !ok || v == "" || ident.Valid(v, 76) {
		return nil
	}
	return fmt.Errorf("annotation %s=%q: use letters, digits, '.', '_' or '-' (at most 76), starting with a letter or digit", Annotation, v)
}

// Key is the group of container id, whose annotations are scoped (Scope): a group
// annotation, the pool shim for template containers, a CRI sandbox, or the container's
// own id (a shim of its own).
func Key(id string, scoped map[string]string) string {
	if v := scoped[Annotation]; v != "" {
		return v
	}
	if scoped[TemplateAnnotation] != "" {
		return Pool
	}
	for _, k := range annotations {
		if v := scoped[k]; v != "" {
			return v
		}
	}
	return id
}

// Scope gives a container of a Kubernetes pod the warm annotations meant for it. A
// Pod's annotations reach every container of the pod (pod_annotations), the sandbox
// (pause) container included: that one never makes, names or recovers a template (only
// io.containerd.warm.group still applies to it), and KEY/NAME (e.g.
// io.containerd.warm.template/app) is KEY for the container named NAME, over a plain
// KEY. Other containers' annotations are returned as they are; the map is not modified.
func Scope(ann map[string]string) map[string]string {
	kind, name := ann[criContainerType], ann[criContainerName]
	if kind == "" {
		return ann
	}
	out := make(map[string]string, len(ann))
	for k, v := range ann {
		if !strings.HasPrefix(k, warmPrefix) || k == Annotation {
			out[k] = v
		} else if base, _, scoped := strings.Cut(k, "/"); kind != "sandbox" && !scoped {
			out[base] = v
		}
	}
	if kind == "sandbox" || name == "" {
		return out
	}
	for k, v := range ann {
		if base, n, ok := strings.Cut(k, "/"); ok && n == name && strings.HasPrefix(base, warmPrefix) {
			out[base] = v
		}
	}
	return out
}
