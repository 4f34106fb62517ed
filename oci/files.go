package oci

import (
	"bytes"
	"encoding/json"
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

// RuncErrors returns the error messages in runc's JSON log file (--log), newest last,
// at most the last three, joined: what runc said when a command failed before CRIU ran.
func RuncErrors(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var msgs []string
	for _, l := range strings.Split(string(data), "\n") {
		var e struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal([]byte(l), &e) == nil && (e.Level == "error" || e.Level == "fatal") && e.Msg != "" {
			msgs = append(msgs, e.Msg)
		}
	}
	if len(msgs) > 3 {
		msgs = msgs[len(msgs)-3:]
	}
	return strings.Join(msgs, " | ")
}
