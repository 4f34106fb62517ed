// Command containerd-shim-warm-v2 is what containerd runs for the warm runtime
// (io.containerd.warm.v2): a small front that answers the start action of a container
// joining a shim already running (a pool hit, a container of a pod: internal/fastjoin)
// and the delete action of a container the shim has cleaned up after
// (internal/fastdelete), and hands every other invocation to the shim itself
// (cmd/warm-shim, installed as ../libexec/warm/containerd-shim-warm-v2), with the same
// arguments, environment, directory and standard streams. containerd runs both actions
// for every container; the shim's own start-up costs about 3 ms more of CPU and latency
// each time for the start action, and the delete action about 7 ms of CPU.
//
// c/front.c is the same program in C, which make build installs where a C compiler is (it
// starts in a fraction of the time a Go binary needs); front_c_test.go holds it to this
// one.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/internal/fastdelete"
	"github.com/warmshim/warm/internal/fastjoin"
	"github.com/warmshim/warm/internal/shimargs"
)

// shimRel is where the shim is, relative to this binary's directory.
var shimRel = filepath.Join("..", "libexec", "warm", "containerd-shim-warm-v2")

func main() {
	args, parsed := shimargs.Parse(os.Args[1:])
	start := parsed && fastjoin.IsStart(args)
	var input []byte
	if parsed && args.Action == "delete" {
		if dir, err := os.Getwd(); err == nil {
			if out, ok := fastdelete.Answer(args, dir); ok {
				if _, err := os.Stdout.Write(out); err != nil {
					fail("write the answer: %v", err)
				}
				return
			}
		}
	}
	if start {
		// The bootstrap parameters, read as the shim library reads them.
		var err error
		if input, err = io.ReadAll(io.LimitReader(os.Stdin, 10<<20)); err != nil {
			fail("read stdin: %v", err)
		}
		if dir, err := os.Getwd(); err == nil {
			if out, ok := fastjoin.Answer(args, input, dir); ok {
				if _, err := os.Stdout.Write(out); err != nil {
					fail("write the answer: %v", err)
				}
				return
			}
		}
	}
	self, err := os.Executable()
	if err != nil {
		fail("%v", err)
	}
	shim := filepath.Join(filepath.Dir(self), shimRel)
	if start {
		// The shim reads the parameters from stdin: give it what was read, from the start.
		if err := replaceStdin(input); err != nil {
			fail("pass the bootstrap parameters on: %v", err)
		}
	}
	err = syscall.Exec(shim, os.Args, os.Environ())
	fail("run the shim %s: %v (it is installed beside this binary's directory, in libexec/warm)", shim, err)
}

// replaceStdin makes fd 0 a file that holds data, at offset 0.
func replaceStdin(data []byte) error {
	fd, err := unix.MemfdCreate("bootstrap-params", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "bootstrap-params")
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return unix.Dup3(fd, 0, 0) // the copy on fd 0 is not close-on-exec
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "containerd-shim-warm-v2: "+format+"\n", args...)
	os.Exit(1)
}
