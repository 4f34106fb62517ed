package harness

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

// repoRoot is the module's directory (this file is test/harness/apps.go).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

func baseDirs() []File {
	var fs []File
	for _, d := range []string{"tmp", "proc", "sys", "dev", "etc", "usr", "usr/bin", "usr/lib", "lib", "lib64", "app"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		fs = append(fs, File{Path: d, Dir: true, Mode: mode})
	}
	return append(fs, File{Path: "etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\n")})
}

// GoServiceFiles builds the static sample Go service (test/apps/goservice) and returns
// an image root with it as /app/goservice.
func GoServiceFiles(workDir string) ([]File, error) {
	bin := filepath.Join(workDir, "goservice")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./test/apps/goservice")
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build goservice: %w: %s", err, out)
	}
	return append(baseDirs(), File{Path: "app/goservice", Src: bin, Mode: 0o755}), nil
}

// PythonFiles returns an image root with Debian's python3.11, its standard library and
// the libraries it and its extension modules link, and the sample service as
// /app/service.py.
func PythonFiles() ([]File, error) {
	const py = "/usr/bin/python3.11"
	const lib = "/usr/lib/python3.11"
	if _, err := os.Stat(py); err != nil {
		return nil, fmt.Errorf("%s (Debian's python3 package): %w", py, err)
	}
	files := baseDirs()
	files = append(files, File{Path: "usr/bin/python3", Src: py, Mode: 0o755})
	skip := map[string]bool{"test": true, "idlelib": true, "tkinter": true, "ensurepip": true, "lib2to3": true, "pydoc_data": true, "turtledemo": true}
	var sos []string
	err := filepath.WalkDir(lib, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, "/")
		if d.IsDir() {
			if skip[d.Name()] {
				return filepath.SkipDir
			}
			files = append(files, File{Path: rel, Dir: true, Mode: 0o755})
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		if strings.HasSuffix(p, ".so") {
			sos = append(sos, p)
		}
		files = append(files, File{Path: rel, Src: p, Mode: 0o644})
		return nil
	})
	if err != nil {
		return nil, err
	}
	libs, err := sharedLibs(append([]string{py}, sos...))
	if err != nil {
		return nil, err
	}
	dirs := map[string]bool{}
	for _, l := range libs {
		d := filepath.Dir(strings.TrimPrefix(l, "/"))
		for d != "." && !dirs[d] {
			dirs[d] = true
			d = filepath.Dir(d)
		}
	}
	var dl []string
	for d := range dirs {
		dl = append(dl, d)
	}
	sort.Strings(dl)
	for _, d := range dl {
		files = append(files, File{Path: d, Dir: true, Mode: 0o755})
	}
	for _, l := range libs {
		files = append(files, File{Path: strings.TrimPrefix(l, "/"), Src: l, Mode: 0o755})
	}
	files = append(files, File{Path: "app/service.py", Src: filepath.Join(repoRoot(), "test/apps/pyservice/service.py"), Mode: 0o644})
	return files, nil
}

// sharedLibs lists, by the paths ldd resolves, the libraries the binaries need.
func sharedLibs(bins []string) ([]string, error) {
	seen := map[string]bool{}
	for _, b := range bins {
		out, err := exec.Command("ldd", b).Output()
		if err != nil {
			continue // not dynamic
		}
		for _, line := range strings.Split(string(bytes.TrimSpace(out)), "\n") {
			f := strings.Fields(line)
			for _, x := range f {
				if strings.HasPrefix(x, "/") {
					seen[x] = true
				}
			}
		}
	}
	var libs []string
	for l := range seen {
		libs = append(libs, l)
	}
	sort.Strings(libs)
	return libs, nil
}
