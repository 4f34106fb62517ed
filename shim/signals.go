package shim

import (
	"os"
	"os/signal"
	"syscall"
)

// DefaultChildSignals gives the processes the shim starts (runc, CRIU, and through runc
// the containers) SIGHUP at its default, should the shim have been started ignoring it
// (`nohup warmctl start`, a service manager's setting): an ignored signal is inherited
// across exec, and a container's shell cannot trap a signal it started with ignored (nor
// would a template made so ever end on one). The shim catches it instead, and does
// nothing with it, as it did ignoring it; a caught signal is reset to its default at
// exec. (containerd's shim library already catches SIGINT and SIGTERM.)
func DefaultChildSignals() {
	if signal.Ignored(syscall.SIGHUP) {
		signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	}
}
