package hwbreak

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Offsets in struct user (sys/user.h) of the debug registers DR0 (the address) and DR7
// (the control bits): what PTRACE_POKEUSER takes, as CRIU's compel writes them.
const (
	offDR0 = 848
	offDR7 = offDR0 + 7*8
	// dr7Local0 enables DR0 for the task, as an execution breakpoint (R/W0 and LEN0 zero).
	dr7Local0 = 0x1
	// atEntry is the auxiliary vector's key of the program's entry point (elf.h).
	atEntry = 9
)

// Probe runs `true` under ptrace with an execution breakpoint on its entry point, as
// CRIU sets one: it reports whether the breakpoint stopped it (true) or it ran to its
// exit without a stop (false). It takes about a millisecond.
func Probe() (bool, error) {
	path, err := exec.LookPath("true")
	if err != nil {
		if path, err = exec.LookPath("/bin/true"); err != nil {
			return false, fmt.Errorf("hardware breakpoint probe: %w", err)
		}
	}
	// ptrace requests must come from the thread that traces.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command(path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("hardware breakpoint probe: %w", err)
	}
	pid := cmd.Process.Pid
	exited := false
	defer func() {
		if !exited {
			_ = unix.Kill(pid, unix.SIGKILL)
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, 0, nil)
		}
	}()
	var ws unix.WaitStatus
	// Stopped at its exec (PTRACE_TRACEME).
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
		return false, fmt.Errorf("hardware breakpoint probe: wait: %w", err)
	}
	if !ws.Stopped() {
		exited = ws.Exited() || ws.Signaled()
		return false, fmt.Errorf("hardware breakpoint probe: %s did not stop at its exec (%v)", path, ws)
	}
	entry, err := entryPoint(pid)
	if err != nil {
		return false, err
	}
	if err := pokeUser(pid, offDR0, entry); err != nil {
		return false, err
	}
	if err := pokeUser(pid, offDR7, dr7Local0); err != nil {
		return false, err
	}
	if err := unix.PtraceCont(pid, 0); err != nil {
		return false, fmt.Errorf("hardware breakpoint probe: continue: %w", err)
	}
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
		return false, fmt.Errorf("hardware breakpoint probe: wait: %w", err)
	}
	switch {
	case ws.Stopped() && ws.StopSignal() == unix.SIGTRAP:
		return true, nil
	case ws.Exited():
		exited = true
		return false, nil
	case ws.Signaled():
		exited = true
		return false, fmt.Errorf("hardware breakpoint probe: %s killed by %v", path, ws.Signal())
	}
	return false, fmt.Errorf("hardware breakpoint probe: %s stopped by %v, not a breakpoint", path, ws.StopSignal())
}

func pokeUser(pid int, off, val uintptr) error {
	if _, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_POKEUSR, uintptr(pid), off, val, 0, 0); errno != 0 {
		return fmt.Errorf("hardware breakpoint probe: PTRACE_POKEUSER %d: %w", off, errno)
	}
	return nil
}

// entryPoint reads the program's entry point (AT_ENTRY) from its auxiliary vector.
func entryPoint(pid int) (uintptr, error) {
	auxv, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/auxv")
	if err != nil {
		return 0, fmt.Errorf("hardware breakpoint probe: %w", err)
	}
	for i := 0; i+16 <= len(auxv); i += 16 {
		key, val := binary.LittleEndian.Uint64(auxv[i:]), binary.LittleEndian.Uint64(auxv[i+8:])
		if key == atEntry {
			return uintptr(val), nil
		}
	}
	return 0, errors.New("hardware breakpoint probe: no AT_ENTRY in the auxiliary vector")
}
