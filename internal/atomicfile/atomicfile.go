// Package atomicfile replaces a file whole: a reader sees the old content or the new,
// never part of it.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write puts data in path, root-only (0600), through a temporary file of path's
// directory renamed over it. The temporary file is removed if anything fails.
func Write(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // gone once renamed
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil { // CreateTemp made it 0600
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
