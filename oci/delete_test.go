package oci

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	runc "github.com/containerd/go-runc"
)

// TestDeleteContainerGone: runc is not run for a container whose state directory is
// gone; it is for one whose directory is there.
func TestDeleteContainerGone(t *testing.T) {
	root := t.TempDir()
	r := &runc.Runc{Command: filepath.Join(t.TempDir(), "no-runc"), Root: root}
	if err := DeleteContainer(context.Background(), r, "gone"); err != nil {
		t.Fatalf("a container runc no longer knows: %v", err)
	}
	if err := os.Mkdir(filepath.Join(root, "here"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := DeleteContainer(context.Background(), r, "here"); err == nil {
		t.Fatal("runc was not run for a container whose state is there")
	}
}
