package oci

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/warmshim/warm/internal/testenv"
)

// TestRebindIsPrivate: a network file rebound into a sandbox is one private mount, as
// runc makes it: a mount over its source on the host (on a shared mount, as systemd's /
// is) does not show through, and the template's file under it is gone.
func TestRebindIsPrivate(t *testing.T) {
	testenv.NeedRoot(t, "mounts")
	dir, err := os.MkdirTemp("/tmp", "warm-rebind-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	shared := filepath.Join(dir, "shared")
	if err := os.MkdirAll(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", shared, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(shared, unix.MNT_DETACH)
	if err := unix.Mount("", shared, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(shared, "hosts"), []byte("request"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The sandbox: a process in a mount namespace of its own, where the target is a
	// bind mount of the template's file.
	target, tmplFile := filepath.Join(dir, "target"), filepath.Join(dir, "template-hosts")
	for f, s := range map[string]string{target: "", tmplFile: "template"} {
		if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", "mount --bind "+tmplFile+" "+target+" && echo ok && exec sleep 60")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	buf := make([]byte, 3)
	if n, err := out.Read(buf); err != nil || string(buf[:n]) != "ok\n" {
		t.Fatalf("sandbox stand-in: %q %v", buf[:n], err)
	}
	pid := cmd.Process.Pid
	if err := rebindMounts(pid, []specs.Mount{{Destination: target, Type: "bind", Source: filepath.Join(shared, "hosts"), Options: []string{"rbind", "rprivate", "rw"}}}); err != nil {
		t.Fatal(err)
	}
	// The host mounts over the source file.
	evil := filepath.Join(dir, "evil")
	if err := os.WriteFile(evil, []byte("evil"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(evil, filepath.Join(shared, "hosts"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(filepath.Join(shared, "hosts"), unix.MNT_DETACH)
	got, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/root" + target)
	mi, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/mountinfo")
	var at []string
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, " "+target+" ") {
			at = append(at, l)
		}
	}
	if string(got) != "request" || len(at) != 1 || strings.Contains(at[0], "shared:") {
		t.Fatalf("the sandbox reads %q; its mounts at %s:\n%s", got, target, strings.Join(at, "\n"))
	}
}
