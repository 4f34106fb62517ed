package shim

import (
	"fmt"
	"strings"
	"time"
)

// Annotations that drive warm.
const (
	// AnnTemplate names a template: with AnnReady the container makes it; without, the
	// container asks to be served from it.
	AnnTemplate = "io.containerd.warm.template"
	// AnnReady says when a template-making container is initialised:
	// file:/path, stdout:TEXT or delay:DURATION.
	AnnReady = "io.containerd.warm.ready"
)

// readyRule is a parsed AnnReady.
type readyRule struct {
	kind  string // file, stdout, delay
	arg   string
	delay time.Duration
}

func parseReady(s string) (readyRule, error) {
	kind, arg, ok := strings.Cut(s, ":")
	fix := fmt.Sprintf("annotation %s=%q: use file:/path (appears inside the container), stdout:TEXT (a line containing TEXT) or delay:DURATION (e.g. delay:2s)", AnnReady, s)
	if !ok || arg == "" {
		return readyRule{}, fmt.Errorf("%s", fix)
	}
	r := readyRule{kind: kind, arg: arg}
	switch kind {
	case "file":
		if !strings.HasPrefix(arg, "/") {
			return readyRule{}, fmt.Errorf("%s: the file path must be absolute", fix)
		}
	case "stdout":
	case "delay":
		d, err := time.ParseDuration(arg)
		if err != nil || d <= 0 {
			return readyRule{}, fmt.Errorf("%s: %q is not a positive duration", fix, arg)
		}
		r.delay = d
	default:
		return readyRule{}, fmt.Errorf("%s: unknown kind %q", fix, kind)
	}
	return r, nil
}

// CRI's annotations on every container of a pod.
const (
	criContainerType = "io.kubernetes.cri.container-type" // "sandbox" or "container"
	criContainerName = "io.kubernetes.cri.container-name"
	warmPrefix       = "io.containerd.warm."
)

// scopeAnnotations gives a container of a Kubernetes pod the warm annotations meant for
// it. A Pod's annotations reach every container of the pod (pod_annotations), the
// sandbox (pause) container included: that one never makes, names or recovers a
// template (only io.containerd.warm.group still applies to it), and KEY/NAME (e.g.
// io.containerd.warm.template/app) is KEY for the container named NAME, over a plain
// KEY. Other containers' annotations are returned as they are; the map is not modified.
func scopeAnnotations(ann map[string]string) map[string]string {
	kind, name := ann[criContainerType], ann[criContainerName]
	if kind == "" {
		return ann
	}
	out := make(map[string]string, len(ann))
	for k, v := range ann {
		if !strings.HasPrefix(k, warmPrefix) || k == GroupAnnotation {
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
