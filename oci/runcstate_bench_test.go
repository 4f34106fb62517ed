package oci

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// BenchmarkRenameRuncContainer measures adoption's rewrite of runc's state (a config with
// 60 mounts) in a directory under /tmp: with the rewrite file the restore created and
// without (a new inode), and what reading and parsing the state again would add.
func BenchmarkRenameRuncContainer(b *testing.B) {
	mounts := strings.Repeat(`{"source":"proc","destination":"/proc","device":"proc","flags":14,"propagation_flags":null,"data":"","relabel":"","rec_attr":null,"extensions":0},`, 60)
	state := strings.Replace(sampleState, `"rootfs":"/b/rootfs"`, `"rootfs":"/b/rootfs","mounts":[`+strings.TrimSuffix(mounts, ",")+`]`, 1)
	spec := &specs.Spec{Hostname: "h1", Annotations: map[string]string{"a": "b"}}
	paths := map[string]string{"memory": "/sys/fs/cgroup/memory/ns/c1"}
	for _, pre := range []bool{false, true} {
		b.Run(fmt.Sprintf("precreated=%v", pre), func(b *testing.B) {
			root := b.TempDir()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				old := filepath.Join(root, fmt.Sprintf("sb-%d", i))
				if err := os.Mkdir(old, 0o700); err != nil {
					b.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(old, "state.json"), []byte(state), 0o600); err != nil {
					b.Fatal(err)
				}
				kept, err := keepRuncState(old)
				if err != nil {
					b.Fatal(err)
				}
				if !pre {
					if err := os.Remove(filepath.Join(old, stateRewrite)); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				k, err := adoptionState(old, kept)
				if err != nil {
					b.Fatal(err)
				}
				if err := renameRuncContainer(root, filepath.Base(old), fmt.Sprintf("c-%d", i), k, paths, "/ns/c1", "/b", spec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("read-and-parse", func(b *testing.B) {
		dir := b.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(state), 0o600); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < b.N; i++ {
			if _, err := adoptionState(dir, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
