package shim

import (
	"fmt"
	"strings"
	"time"

	"github.com/warmshim/warm/internal/group"
)

// Annotations that drive warm.
const (
	// AnnTemplate names a template: with AnnReady the container makes it; without, the
	// container asks to be served from it.
	AnnTemplate = group.TemplateAnnotation
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

// maxReadyText bounds a stdout readiness TEXT (the tee keeps a line's tail this long).
const maxReadyText = 4096

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
		if strings.ContainsAny(arg, "\r\n") {
			return readyRule{}, fmt.Errorf("%s: TEXT is matched within one line and cannot hold a line break", fix)
		}
		if len(arg) > maxReadyText {
			return readyRule{}, fmt.Errorf("%s: TEXT is %d bytes; use at most %d", fix, len(arg), maxReadyText)
		}
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
