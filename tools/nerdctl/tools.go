//go:build tools

// Package tools pins the nerdctl that warm's tests run against.
package tools

import _ "github.com/containerd/nerdctl/v2/cmd/nerdctl"
