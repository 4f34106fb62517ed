// Package shimargs parses containerd's command line of a shim v2 binary (its flags and
// action) as containerd's shim library does, for the front that answers some actions
// without loading the shim.
package shimargs

import (
	"flag"
	"io"
)

// Args is a shim invocation's command line.
type Args struct {
	Namespace, ID, Bundle, Address string
	Debug                          bool
	// Action is the one argument after the flags: start, delete, or empty when there is
	// none (the shim serving its socket).
	Action string
}

// Parse parses args (without the program name) with the shim library's flags. ok is
// false for a command line the library would not run an action for: a flag it does not
// know or a bad value, -v, -version or -info, or more than one argument.
func Parse(args []string) (a Args, ok bool) {
	fs := flag.NewFlagSet("shim", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var version, info bool
	var socket, debugSocket, binary string
	fs.BoolVar(&a.Debug, "debug", false, "")
	fs.BoolVar(&version, "v", false, "")
	fs.BoolVar(&version, "version", false, "")
	fs.BoolVar(&info, "info", false, "")
	fs.StringVar(&a.Namespace, "namespace", "", "")
	fs.StringVar(&a.ID, "id", "", "")
	fs.StringVar(&socket, "socket", "", "")
	fs.StringVar(&debugSocket, "debug-socket", "", "")
	fs.StringVar(&a.Bundle, "bundle", "", "")
	fs.StringVar(&a.Address, "address", "", "")
	fs.StringVar(&binary, "publish-binary", "", "")
	if err := fs.Parse(args); err != nil || version || info || fs.NArg() > 1 {
		return a, false
	}
	a.Action = fs.Arg(0)
	return a, true
}
