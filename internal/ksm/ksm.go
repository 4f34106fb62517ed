// Package ksm reads and sets the kernel's same-page merging (KSM): whether this kernel
// can merge a process's pages on its own request (prctl PR_SET_MEMORY_MERGE, Linux 6.4),
// and the scanner's settings in /sys/kernel/mm/ksm.
package ksm

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Dir holds the scanner's settings and counters.
const Dir = "/sys/kernel/mm/ksm"

// Unavailable says why this kernel cannot merge the pages of a process and of what it
// starts ("" when it can).
func Unavailable() string {
	if _, err := unix.PrctlRetInt(unix.PR_GET_MEMORY_MERGE, 0, 0, 0, 0); err != nil {
		return fmt.Sprintf("this kernel cannot merge a process's pages (prctl PR_GET_MEMORY_MERGE: %v; it needs Linux 6.4 or later)", err)
	}
	return ""
}

// Read returns the value of one of the scanner's files (run, pages_to_scan, full_scans...).
func Read(name string) (string, error) {
	data, err := os.ReadFile(filepath.Join(Dir, name))
	return strings.TrimSpace(string(data)), err
}

// FullScans is how many full scans the scanner has made (0 where it cannot be read).
func FullScans() int {
	v, _ := Read("full_scans")
	n, _ := strconv.Atoi(v)
	return n
}

// Set writes the scanner's settings, name and value pairs in order, and returns a
// function that writes the old values back, in the reverse order. On an error, what it
// wrote is put back.
func Set(settings ...[2]string) (restore func(), err error) {
	var undo []func()
	restore = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	for _, kv := range settings {
		p := filepath.Join(Dir, kv[0])
		old, err := os.ReadFile(p)
		if err != nil {
			restore()
			return nil, err
		}
		if err := os.WriteFile(p, []byte(kv[1]), 0); err != nil {
			restore()
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		undo = append(undo, func() { _ = os.WriteFile(p, bytes.TrimSpace(old), 0) })
	}
	return restore, nil
}
