// Package fastdelete answers containerd's delete action for a container whose shim has
// already cleaned up after it, as the shim's manager (its Stop) would, without loading
// the shim. containerd runs the delete action after every task it deletes (it takes the
// closed connection for a dead shim), and the shim binary's start-up alone costs about
// 8 ms of CPU each time. In that usual case Stop only reads the exit status the shim
// recorded: runc's state is gone (runc delete would do nothing) and no root filesystem
// is mounted. Anything else (runc's state still there, a mounted or non-empty rootfs, no
// valid exit status, unexpected options) is left to the shim, which then does exactly
// what it did before.
package fastdelete

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/warmshim/warm/internal/shimargs"
)

// defaultRuncRoot is runc's root when the bundle's options name none (containerd's
// process.RuncRoot); the namespace is appended to it.
const defaultRuncRoot = "/run/containerd/runc"

// exit is containerd's go-runc Exit, as its runc package records it in exit.json.
type exit struct {
	Timestamp time.Time
	Pid       int
	Status    int
}

// Field numbers of containerd.task.v3.DeleteResponse and google.protobuf.Timestamp.
const (
	respPid        = 1
	respExitStatus = 2
	respExitedAt   = 3
	tsSeconds      = 1
	tsNanos        = 2
)

// Answer returns the delete action's answer (a DeleteResponse) if the command line a
// and the directory dir containerd runs it in make it the delete action of a container
// that needs no clean-up. ok is false, and nothing was read but files, in every other
// case.
func Answer(a shimargs.Args, dir string) (out []byte, ok bool) {
	if a.Action != "delete" || a.Namespace == "" || a.ID == "" {
		return nil, false
	}
	// The bundle, as the shim's Stop finds it.
	path := filepath.Join(filepath.Dir(dir), a.ID)
	root, ok := runcRoot(path)
	if !ok {
		return nil, false
	}
	if _, err := os.Lstat(filepath.Join(root, a.Namespace, a.ID)); !errors.Is(err, os.ErrNotExist) {
		return nil, false // runc's state is there: runc delete has work to do
	}
	if !unmounted(filepath.Join(path, "rootfs")) {
		return nil, false
	}
	e, ok := readExit(path)
	if !ok {
		return nil, false
	}
	return response(e), true
}

// runcRoot is the runc root of the bundle's options.json (containerd's runc options),
// or the default when there is none.
func runcRoot(bundle string) (string, bool) {
	data, err := os.ReadFile(filepath.Join(bundle, "options.json"))
	if errors.Is(err, os.ErrNotExist) {
		return defaultRuncRoot, true
	}
	if err != nil {
		return "", false
	}
	var opts struct {
		Root string `json:"root"`
	}
	if json.Unmarshal(data, &opts) != nil {
		return "", false
	}
	if opts.Root == "" {
		return defaultRuncRoot, true
	}
	return opts.Root, true
}

// unmounted reports whether nothing is mounted at or below rootfs: it is missing, or an
// empty directory that is not a mount's root (a mount below it would need an entry).
func unmounted(rootfs string) bool {
	var st unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, rootfs, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE, &st)
	if errors.Is(err, unix.ENOENT) {
		return true
	}
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR ||
		st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 || st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return false
	}
	f, err := os.Open(rootfs)
	if err != nil {
		return false
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	return err == io.EOF
}

// readExit reads exit.json as containerd's runc.ReadExitStatus does, with its checks.
func readExit(bundle string) (exit, bool) {
	f, err := os.Open(filepath.Join(bundle, "exit.json"))
	if err != nil {
		return exit{}, false
	}
	defer f.Close()
	var e exit
	if err := json.NewDecoder(f).Decode(&e); err != nil {
		return exit{}, false
	}
	if e.Pid <= 0 || e.Timestamp.IsZero() || e.Status < 0 {
		return exit{}, false
	}
	return e, true
}

// response encodes DeleteResponse{pid, exit_status, exited_at} as proto.Marshal does
// (fields in order, zero scalars left out, the timestamp always present).
func response(e exit) []byte {
	var b []byte
	if pid := uint32(e.Pid); pid != 0 {
		b = protowire.AppendTag(b, respPid, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(pid))
	}
	if status := uint32(e.Status); status != 0 {
		b = protowire.AppendTag(b, respExitStatus, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(status))
	}
	var ts []byte
	if s := e.Timestamp.Unix(); s != 0 {
		ts = protowire.AppendTag(ts, tsSeconds, protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(s))
	}
	if n := int32(e.Timestamp.Nanosecond()); n != 0 {
		ts = protowire.AppendTag(ts, tsNanos, protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(n))
	}
	b = protowire.AppendTag(b, respExitedAt, protowire.BytesType)
	return protowire.AppendBytes(b, ts)
}
