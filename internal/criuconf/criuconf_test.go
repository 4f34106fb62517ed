package criuconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnvWritesTheFile(t *testing.T) {
	t.Setenv(EnvVar, "")
	dir := filepath.Join(t.TempDir(), "criu")
	for _, method := range Methods {
		env, err := Env(dir, method)
		if err != nil {
			t.Fatal(err)
		}
		if len(env) != 1 || !strings.HasPrefix(env[0], EnvVar+"=") {
			t.Fatalf("%s: env %q", method, env)
		}
		path := strings.TrimPrefix(env[0], EnvVar+"=")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(data), "network-lock "+method+"\n"; got != want {
			t.Errorf("%s: file holds %q, want %q", method, got, want)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", method, fi.Mode().Perm())
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v %v, want 0700", fi.Mode().Perm(), err)
	}
	// A file changed behind the shim's back is written again.
	path := filepath.Join(dir, "criu-network-lock-skip.conf")
	if err := os.WriteFile(path, []byte("network-lock iptables\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Env(dir, "skip"); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(path); string(data) != "network-lock skip\n" {
		t.Errorf("rewritten file holds %q", data)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".criu-network-lock-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// A file removed behind the shim's back (a cleaned run_dir) is written again.
func TestEnvWritesARemovedFileAgain(t *testing.T) {
	t.Setenv(EnvVar, "")
	dir := t.TempDir()
	env, err := Env(dir, "skip")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := Env(dir, "skip"); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(strings.TrimPrefix(env[0], EnvVar+"=")); err != nil || string(data) != "network-lock skip\n" {
		t.Fatalf("after removal: %q, %v", data, err)
	}
}

func TestEnvKeepsTheOperatorsFile(t *testing.T) {
	t.Setenv(EnvVar, "/etc/criu/mine.conf")
	dir := t.TempDir()
	env, err := Env(dir, "skip")
	if err != nil || env != nil {
		t.Fatalf("Env = %q, %v; want nothing", env, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("wrote %v", entries)
	}
}

func TestEnvRejectsAnUnknownMethod(t *testing.T) {
	_, err := Env(t.TempDir(), "ipchains")
	if err == nil || !strings.Contains(err.Error(), "ipchains") || !strings.Contains(err.Error(), "skip") {
		t.Fatalf("err = %v", err)
	}
}
