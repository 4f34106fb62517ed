package oci

import (
	"bytes"
	"io"
	"os"
	"strings"
)

// CopyFile copies from into to, created with perm.
func CopyFile(to, from string, perm os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// LastLines returns the last n lines of the file at path joined by " | ", for error
// messages that must show what runc or CRIU said; "" if it cannot be read.
func LastLines(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(string(bytes.TrimRight(data, "\n")), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// CriuErrors returns the error lines of a CRIU log (the last few, else its last lines),
// joined by " | ", for error messages a user can act on.
func CriuErrors(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var errs []string
	for _, l := range strings.Split(string(data), "\n") {
		// CRIU says this on every run here (root lacks CAP_SYS_RESOURCE); it is harmless.
		if strings.Contains(l, "RLIMIT_NOFILE") {
			continue
		}
		if strings.Contains(l, "Error") || strings.Contains(l, "Warn") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	if len(errs) == 0 {
		return LastLines(path, 3)
	}
	if len(errs) > 4 {
		errs = errs[len(errs)-4:]
	}
	return strings.Join(errs, " | ")
}
