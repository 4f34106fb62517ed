// Package wrap is the runc that containerd's process package drives for a container
// served from the pool. The shim names its own binary as that container's runc;
// invoked so (its first argument is runc's --root), the binary asks the shim, over a
// root-only unix socket, to handle create (adopt a frozen sandbox: it sends the stdio
// runc would have given the process) and start (thaw it); everything else, and every
// container the shim does not know, goes to the real runc by exec.
package wrap

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Environment the shim sets for its children.
const (
	// EnvRunc is the real runc binary.
	EnvRunc = "WARM_RUNC"
	// EnvSocket is the shim's adoption socket.
	EnvSocket = "WARM_ADOPT_SOCKET"
)

// Request is what the wrapper asks the shim.
type Request struct {
	Op      string `json:"op"` // create, start, kill, delete
	ID      string `json:"id"`
	PidFile string `json:"pid_file,omitempty"`
	// Kill's signal as runc got it (a number or a name; "" is runc's default, SIGTERM).
	Signal string `json:"signal,omitempty"`
}

// Response is the shim's answer. Handled false means: run the real runc.
type Response struct {
	Handled bool   `json:"handled"`
	Error   string `json:"error,omitempty"`
}

// Binary is the name of the small wrapper binary installed beside the shim.
const Binary = "warm-runc"

// FlagMemoryMerge, among runc's global flags, makes the wrapper turn kernel same-page
// merging (KSM) on for itself before it runs the real runc (prctl PR_SET_MEMORY_MERGE,
// Linux 6.4+). Every process runc then starts inherits it, CRIU and the tasks CRIU
// restores among them, so the kernel may merge their identical pages. The shim passes it
// to the restores of a pool configured with ksm = true, through its own binary: only
// this package's wrapper (Go) knows the flag, not the C warm-runc.
const FlagMemoryMerge = "--warm-memory-merge"

// HasMemoryMerge reports whether a runc command line has FlagMemoryMerge among its
// global flags.
func HasMemoryMerge(args []string) bool {
	_, ok := takeMemoryMerge(args)
	return ok
}

// takeMemoryMerge removes FlagMemoryMerge from the global flags of a runc command line
// and reports whether it was there.
func takeMemoryMerge(args []string) ([]string, bool) {
	for i := 1; i < len(args) && strings.HasPrefix(args[i], "-"); i++ {
		switch {
		case args[i] == FlagMemoryMerge:
			return slices.Delete(slices.Clone(args), i, i+1), true
		case valueFlags[args[i]]:
			i++
		}
	}
	return args, false
}

// IsInvocation reports whether this process (the shim binary) was started as the
// wrapper, which the shim does when warm-runc is not installed beside it.
func IsInvocation(args []string) bool {
	return os.Getenv(EnvRunc) != "" && len(args) > 1 && args[1] == "--root"
}

// runc's global flags that take a value.
var valueFlags = map[string]bool{"--root": true, "--log": true, "--log-format": true, "--criu": true}

// logPath returns runc's --log argument.
func logPath(args []string) string { return globalFlag(args, "--log") }

// Root returns runc's --root argument (empty: runc's default).
func Root(args []string) string { return globalFlag(args, "--root") }

// globalFlag returns the value of runc's global flag name (one of valueFlags) in args,
// the command line of a runc command.
func globalFlag(args []string, name string) string {
	for i := 1; i+1 < len(args); i++ {
		switch {
		case args[i] == name:
			return args[i+1]
		case valueFlags[args[i]]:
			i++
		case !strings.HasPrefix(args[i], "-"):
			return ""
		}
	}
	return ""
}

// fail reports an error where go-runc's caller looks for runc's: stderr and the JSON
// log file.
func fail(args []string, msg string) int {
	fmt.Fprintln(os.Stderr, msg)
	LogError(args, msg)
	return 1
}

// LogError appends msg as an error line to the JSON log file named by runc's --log in
// args (the process package quotes it in a failed command's error).
func LogError(args []string, msg string) {
	if p := logPath(args); p != "" {
		if f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
			line, _ := json.Marshal(map[string]string{"level": "error", "msg": msg, "time": time.Now().UTC().Format(time.RFC3339Nano)})
			f.Write(append(line, '\n'))
			f.Close()
		}
	}
}

// ParseArgs finds the subcommand, the container id and --pid-file of a runc command
// line. The id is the last argument, but for kill ("kill [--all] ID [SIGNAL]") the first
// one that is not a flag.
func ParseArgs(args []string) (sub, id, pidFile string) {
	i := subcommand(args)
	if i >= len(args) {
		return "", "", ""
	}
	sub = args[i]
	rest := args[i+1:]
	if sub == "kill" {
		for _, a := range rest {
			if !strings.HasPrefix(a, "-") {
				return sub, a, ""
			}
		}
		return sub, "", ""
	}
	if len(rest) > 0 {
		id = rest[len(rest)-1]
	}
	return sub, id, SubFlag(args, "--pid-file")
}

// KillSignal returns the signal of a runc kill command line ("kill [--all|-a] ID
// [SIGNAL]"; "" when none is given).
func KillSignal(args []string) string {
	i := subcommand(args)
	if i >= len(args) || args[i] != "kill" {
		return ""
	}
	seenID := false
	for _, a := range args[i+1:] {
		switch {
		case strings.HasPrefix(a, "-"):
		case !seenID:
			seenID = true
		default:
			return a
		}
	}
	return ""
}

// ParseSignal reads a signal as runc kill takes it: a number (0 checks that the
// container lives), or a name with or without its SIG prefix, in any case; "" is
// SIGTERM.
func ParseSignal(s string) (unix.Signal, error) {
	if s == "" {
		return unix.SIGTERM, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 || n > 64 {
			return 0, fmt.Errorf("signal %d out of range", n)
		}
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

// subcommand returns the index of the subcommand in a runc command line (len(args) if
// there is none).
func subcommand(args []string) int {
	i := 1
	for ; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			break
		}
		if valueFlags[a] {
			i++
		}
	}
	return i
}

// SubFlag returns the value of the subcommand's flag name ("name value" or
// "name=value"; the last one given, as runc takes it) in a runc command line, or "".
func SubFlag(args []string, name string) (v string) {
	i := subcommand(args)
	if i >= len(args) {
		return ""
	}
	rest := args[i+1:]
	for j := 0; j < len(rest); j++ {
		if rest[j] == name && j+1 < len(rest) {
			v = rest[j+1]
		} else if after, ok := strings.CutPrefix(rest[j], name+"="); ok {
			v = after
		}
	}
	return v
}

// Main runs the wrapper and returns its exit status.
func Main(args []string) int {
	args, merge := takeMemoryMerge(args)
	if merge {
		if err := unix.Prctl(unix.PR_SET_MEMORY_MERGE, 1, 0, 0, 0); err != nil {
			return fail(args, fmt.Sprintf("warm: turn on memory merging (KSM: prctl PR_SET_MEMORY_MERGE needs Linux 6.4 or later): %v", err))
		}
	}
	sub, id, pidFile := ParseArgs(args)
	if sock := os.Getenv(EnvSocket); sock != "" && id != "" {
		switch sub {
		case "create", "start", "kill", "delete":
			req := Request{Op: sub, ID: id, PidFile: pidFile}
			if sub == "kill" {
				req.Signal = KillSignal(args)
			}
			resp, err := ask(sock, req, sub == "create")
			if err != nil {
				return fail(args, fmt.Sprintf("warm: %s %s: %v", sub, id, err))
			}
			if resp.Error != "" {
				return fail(args, fmt.Sprintf("warm: %s %s: %s", sub, id, resp.Error))
			}
			if resp.Handled {
				return 0
			}
		}
	}
	real := os.Getenv(EnvRunc)
	argv := append([]string{"runc"}, args[1:]...)
	err := syscall.Exec(real, argv, os.Environ())
	return fail(args, fmt.Sprintf("warm: exec %s: %v", real, err))
}

func ask(sock string, req Request, withStdio bool) (Response, error) {
	var resp Response
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return resp, err
	}
	defer c.Close()
	data, err := json.Marshal(req)
	if err != nil {
		return resp, err
	}
	var oob []byte
	if withStdio {
		oob = unix.UnixRights(0, 1, 2)
	}
	if _, _, err := c.WriteMsgUnix(data, oob, nil); err != nil {
		return resp, err
	}
	if err := c.CloseWrite(); err != nil {
		return resp, err
	}
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return resp, fmt.Errorf("read shim reply: %w", err)
	}
	return resp, nil
}

// ReadRequest reads a wrapper's request and the stdio files it sent (nil when none).
func ReadRequest(c *net.UnixConn) (Request, []*os.File, error) {
	var req Request
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(3*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return req, nil, err
	}
	var files []*os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return req, nil, err
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				return req, nil, err
			}
			for _, fd := range fds {
				files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("wrapper-fd-%d", fd)))
			}
		}
	}
	if err := json.Unmarshal(buf[:n], &req); err != nil {
		for _, f := range files {
			f.Close()
		}
		return req, nil, fmt.Errorf("bad request: %w", err)
	}
	return req, files, nil
}

// Reply writes the shim's answer.
func Reply(c *net.UnixConn, r Response) error {
	return json.NewEncoder(c).Encode(r)
}
