// Package childsignals gives the processes this one starts the default disposition of
// signals it was itself started ignoring (`nohup` ignores SIGHUP; a shell's background
// job SIGINT and SIGQUIT). An ignored signal is inherited across exec, down to the
// containers (through containerd, a shim, runc), where a shell cannot trap a signal it
// started with ignored, and a template made so would keep ignoring it. A caught signal
// is reset to its default at exec.
package childsignals

import (
	"os"
	"os/signal"
)

// Default makes each of sigs that this process ignores caught instead, and does nothing
// with it: this process goes on ignoring it in effect, its children start with the
// default. A signal not ignored is left as it is.
func Default(sigs ...os.Signal) {
	for _, sig := range sigs {
		if signal.Ignored(sig) {
			signal.Notify(make(chan os.Signal, 1), sig)
		}
	}
}
