//go:build tools

// Package tools pins the critest and crictl that warm's CRI tests run.
package tools

import (
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
	_ "sigs.k8s.io/cri-tools/cmd/critest"
)
