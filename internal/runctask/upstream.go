package runctask

import (
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/runc"
)

// The parts of containerd's runc package outside container.go, unchanged.
var (
	// NewPlatform is runc.NewPlatform: the console and epoll platform of the process package.
	NewPlatform = runc.NewPlatform
	// ShouldKillAllOnExit is runc.ShouldKillAllOnExit.
	ShouldKillAllOnExit = runc.ShouldKillAllOnExit
	// WriteExitStatus is runc.WriteExitStatus: the bundle's exit.json.
	WriteExitStatus = runc.WriteExitStatus
	// ReadExitStatus is runc.ReadExitStatus.
	ReadExitStatus = runc.ReadExitStatus
)
