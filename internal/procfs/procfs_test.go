package procfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// A command name with spaces and a parenthesis.
	line := []byte("1234 (a b) c) S 77 1234 1234 0 -1 4194560 100 0 0 0 1 2 3 4 20 5 1 0 123 4096 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n")
	st, err := ParseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if st != (Stat{State: 'S', PPid: 77, Nice: 5, Flags: 4194560, Utime: 1, Stime: 2, Cutime: 3, Cstime: 4}) {
		t.Fatalf("got %+v", st)
	}
	if _, err := ParseStat([]byte("1 (x) S 2")); err == nil {
		t.Fatal("a short line parsed")
	}
}

func TestReadStatAndTree(t *testing.T) {
	st, err := ReadStat(os.Getpid())
	if err != nil || st.PPid != os.Getppid() || Dead(os.Getpid()) {
		t.Fatalf("own stat %+v %v", st, err)
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	found := false
	for _, p := range Descendants(os.Getpid()) {
		found = found || p == cmd.Process.Pid
	}
	if !found {
		t.Fatal("a child is not among the descendants")
	}
	cmd.Process.Kill()
	cmd.Process.Wait()
	if !Dead(cmd.Process.Pid) {
		t.Fatal("a reaped child is not dead")
	}
	if ok, err := IsMountPoint("/proc"); err != nil || !ok {
		t.Fatalf("/proc is a mount point: %v %v", ok, err)
	}
}

func TestDying(t *testing.T) {
	if Dying(os.Getpid()) {
		t.Fatal("this process is dying")
	}
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if Dying(pid) {
		t.Fatal("a sleeping child is dying")
	}
	_ = cmd.Process.Kill()
	// Killed and not yet reaped: a zombie (or still in do_exit).
	for i := 0; i < 1000 && !Dying(pid); i++ {
		time.Sleep(time.Millisecond)
	}
	if !Dying(pid) {
		t.Fatal("a killed child is not dying")
	}
	_ = cmd.Wait()
	if !Dying(pid) {
		t.Fatal("a reaped child is not dying")
	}
}

func TestParseSignals(t *testing.T) {
	text := "Name:\tsh\nState:\tS (sleeping)\nNSpid:\t4242\t1\nSigQ:\t0/1\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000100\nSigBlk:\t0000000000010000\nSigIgn:\t0000000000000004\nSigCgt:\t0000000000004003\n"
	st, err := ParseSignals([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	want := Signals{Name: "sh", Pending: 0x100, Blocked: 0x10000, Ignored: 0x4, Caught: 0x4003, NamespacePid: 1}
	if st != want {
		t.Fatalf("got %+v, want %+v", st, want)
	}
	// SIGKILL (9) pending, SIGINT (2) and SIGHUP (1) caught, SIGQUIT (3) ignored,
	// SIGTERM (15) caught.
	for sig, in := range map[int]uint64{9: st.Pending, 1: st.Caught, 2: st.Caught, 15: st.Caught, 3: st.Ignored, 17: st.Blocked} {
		if !Has(in, sig) {
			t.Errorf("signal %d not found", sig)
		}
	}
	if Has(st.Caught, 9) || Has(st.Caught, 0) || Has(st.Caught, 65) {
		t.Error("a signal found that is not there")
	}
	zombie, err := ParseSignals([]byte(strings.Replace(text, "S (sleeping)", "Z (zombie)", 1)))
	if err != nil || !zombie.Zombie {
		t.Fatalf("zombie: %+v %v", zombie, err)
	}
	if _, err := ParseSignals([]byte("Name:\tsh\n")); err == nil {
		t.Fatal("a status without signal masks parsed")
	}
	if _, err := ParseSignals([]byte(strings.Replace(text, "0000000000004003", "zz", 1))); err == nil || !strings.Contains(err.Error(), "SigCgt") {
		t.Fatalf("a bad mask: %v", err)
	}
	// A real one: this process, in the host's PID namespace (or a container's).
	own, err := ReadSignals(os.Getpid())
	if err != nil || own.Zombie || own.NamespacePid < 1 {
		t.Fatalf("own signals %+v %v", own, err)
	}
}

func TestInDir(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(t.TempDir(), "work")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "30")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for _, d := range []string{dir, link} {
		if got := InDir(d); len(got) != 1 || got[0] != cmd.Process.Pid {
			t.Errorf("InDir(%s) = %v, want [%d]", d, got, cmd.Process.Pid)
		}
	}
	if got := InDir(t.TempDir()); len(got) != 0 {
		t.Errorf("an empty directory: %v", got)
	}
}
