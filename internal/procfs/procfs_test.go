package procfs

import (
	"os"
	"os/exec"
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
