// Package logfile keeps a long-lived shim's log in a file of its own. A shim's log
// normally goes only to the FIFO in the bundle of the container that started it; the
// pool shim outlives that container, and once containerd stops reading that FIFO its
// log would be lost.
package logfile

import (
	"fmt"
	"os"
	"sync"

	"github.com/sirupsen/logrus"
)

// Hook is a logrus hook that appends every entry to a file, root-only, which is moved
// to PATH.1 when it grows past Max bytes (one old file is kept).
type Hook struct {
	Path string
	Max  int64

	mu   sync.Mutex
	f    *os.File // guarded by mu
	size int64    // guarded by mu
	fmt  logrus.Formatter
}

// Open opens (appends to) the file at path.
func Open(path string, max int64) (*Hook, error) {
	h := &Hook{Path: path, Max: max, fmt: &logrus.TextFormatter{DisableColors: true, FullTimestamp: true, TimestampFormat: "2006-01-02T15:04:05.000000000Z07:00"}}
	if err := h.open(); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *Hook) open() error {
	f, err := os.OpenFile(h.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("shim log file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("shim log file: %w", err)
	}
	h.f, h.size = f, st.Size()
	return nil
}

// Levels reports that every level is written (the logger's level filters first).
func (h *Hook) Levels() []logrus.Level { return logrus.AllLevels }

// Fire writes one entry.
func (h *Hook) Fire(e *logrus.Entry) error {
	b, err := h.fmt.Format(e)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.f == nil {
		return nil
	}
	if h.Max > 0 && h.size+int64(len(b)) > h.Max {
		h.f.Close()
		h.f = nil
		if err := os.Rename(h.Path, h.Path+".1"); err != nil && !os.IsNotExist(err) {
			return err
		}
		if err := h.open(); err != nil {
			return err
		}
	}
	n, err := h.f.Write(b)
	h.size += int64(n)
	return err
}

// Close closes the file; later entries are dropped.
func (h *Hook) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.f == nil {
		return nil
	}
	err := h.f.Close()
	h.f = nil
	return err
}
