package oci

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// networkFiles are the bind mounts runtimes and tools write per container (nerdctl,
// CRI): a pooled sandbox may carry the template's; adoption binds the request's over them.
var networkFiles = []string{"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}

func isNetworkFile(m specs.Mount) bool {
	return m.Type == "bind" && slices.Contains(networkFiles, m.Destination)
}

// inNamespace runs fn on a locked thread inside the namespace kind ("uts", "mnt") of
// pid, then returns the thread to the shim's namespace (and, for mnt, its working
// directory) before unlocking it. The thread must not die in the sandbox's namespace
// instead: go-runc starts runc with a parent-death signal, and a thread that exits
// SIGKILLs every runc it once forked.
func inNamespace(pid int, kind string, fn func() error) error {
	flag := map[string]int{"uts": unix.CLONE_NEWUTS, "mnt": unix.CLONE_NEWNS}[kind]
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored := false
		defer func() {
			if restored {
				runtime.UnlockOSThread()
			} // else: the goroutine ends locked and Go retires the thread
		}()
		orig, err := os.Open("/proc/thread-self/ns/" + kind)
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/" + kind)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		var cwd int = -1
		if flag == unix.CLONE_NEWNS {
			// Entering a mount namespace needs a thread with its own root and cwd; the
			// cwd is put back afterwards (the root is the namespace's, "/", again).
			if cwd, err = unix.Open(".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
				errc <- err
				return
			}
			defer unix.Close(cwd)
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				errc <- fmt.Errorf("unshare fs: %w", err)
				return
			}
		}
		if err := unix.Setns(int(target.Fd()), flag); err != nil {
			errc <- fmt.Errorf("setns %s: %w", kind, err)
			restored = true // still in our own namespace
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), flag); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return to the shim's %s namespace: %w", kind, err))
			return
		}
		if cwd >= 0 {
			if err := unix.Fchdir(cwd); err != nil {
				errc <- errors.Join(ferr, err)
				return
			}
		}
		restored = true
		errc <- ferr
	}()
	return <-errc
}

// setHostname sets the hostname in the UTS namespace of pid.
func setHostname(pid int, name string) error {
	return inNamespace(pid, "uts", func() error { return unix.Sethostname([]byte(name)) })
}

// rebindMounts binds each mount's source over its destination inside the mount
// namespace of pid. The source is opened as a detached mount (open_tree) in the shim's
// namespace, then moved into the sandbox's (move_mount), so host paths never need to be
// visible inside.
func rebindMounts(pid int, mounts []specs.Mount) error {
	if len(mounts) == 0 {
		return nil
	}
	var trees []int
	defer func() {
		for _, fd := range trees {
			unix.Close(fd)
		}
	}()
	for _, m := range mounts {
		fd, err := unix.OpenTree(unix.AT_FDCWD, m.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return fmt.Errorf("open_tree %s: %w", m.Source, err)
		}
		trees = append(trees, fd)
		// A clone keeps its source's propagation: made private (as runc makes the
		// container's mounts), a mount over the source on the host never shows through,
		// nor one the container makes on the host.
		attr := &unix.MountAttr{Propagation: unix.MS_PRIVATE}
		if slices.Contains(m.Options, "ro") {
			attr.Attr_set = unix.MOUNT_ATTR_RDONLY
		}
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
			// Before Linux 5.12 (no mount_setattr) a read-write file stays as cloned.
			if !errors.Is(err, unix.ENOSYS) || attr.Attr_set != 0 {
				return fmt.Errorf("mount attributes of %s: %w", m.Destination, err)
			}
		}
	}
	return inNamespace(pid, "mnt", func() error {
		for i, m := range mounts {
			// The template's file goes first (a bind mount as the request's is), so the
			// container has one mount there, as a cold start would.
			if err := unix.Unmount(m.Destination, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("unmount the template's %s: %w", m.Destination, err)
			}
			if err := unix.MoveMount(trees[i], "", unix.AT_FDCWD, m.Destination, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
				return fmt.Errorf("move_mount %s: %w", m.Destination, err)
			}
		}
		return nil
	})
}
