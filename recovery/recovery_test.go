package recovery

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/internal/criutest"
)

func TestFromAnnotations(t *testing.T) {
	cfg := config.Default().Recovery
	cases := []struct {
		name    string
		ann     map[string]string
		check   func(Policy) bool
		wantErr string
	}{
		{"off by default", nil, func(p Policy) bool { return !p.Enabled && p.Keep == 3 }, ""},
		{"on", map[string]string{AnnRecovery: "on"}, func(p Policy) bool { return p.Enabled }, ""},
		{"interval and keep", map[string]string{AnnInterval: "2s", AnnKeep: "5"}, func(p Policy) bool { return p.Interval == 2*time.Second && p.Keep == 5 }, ""},
		{"health exec", map[string]string{AnnHealth: "exec:test -f /tmp/ok"}, func(p Policy) bool { return p.Health == Health{"exec", "test -f /tmp/ok"} }, ""},
		{"standby off by default", nil, func(p Policy) bool { return !p.Standby }, ""},
		{"standby on", map[string]string{AnnStandby: "on"}, func(p Policy) bool { return p.Standby }, ""},
		{"bad standby", map[string]string{AnnStandby: "1"}, nil, "recovery-standby=\"1\": use on or off"},
		{"bad switch", map[string]string{AnnRecovery: "yes"}, nil, "use on or off"},
		{"bad interval", map[string]string{AnnInterval: "1ms"}, nil, "at least 100ms"},
		{"bad keep", map[string]string{AnnKeep: "0"}, nil, "at least 1"},
		{"bad health", map[string]string{AnnHealth: "http:/x"}, nil, "unknown kind"},
		{"relative health file", map[string]string{AnnHealth: "file:x"}, nil, "absolute"},
		{"kill grace from the config", nil, func(p Policy) bool { return p.KillGrace == cfg.KillGrace.Duration && p.KillGrace > 0 }, ""},
		{"kill grace", map[string]string{AnnGrace: "90s"}, func(p Policy) bool { return p.KillGrace == 90*time.Second }, ""},
		{"bad kill grace", map[string]string{AnnGrace: "0s"}, nil, "kill-grace=\"0s\": use a positive duration"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := FromAnnotations(cfg, tc.ann)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.check(p) {
				t.Fatalf("got %+v, %v", p, err)
			}
		})
	}
}

func TestAbnormal(t *testing.T) {
	cases := []struct {
		status int
		killed bool
		want   bool
	}{
		{0, false, false}, {1, false, true}, {137, false, true}, {139, false, true}, {137, true, false}, {1, true, false},
	}
	for _, tc := range cases {
		if got := Abnormal(tc.status, tc.killed); got != tc.want {
			t.Errorf("Abnormal(%d, %v) = %v", tc.status, tc.killed, got)
		}
	}
}

func TestCrashLoop(t *testing.T) {
	var c CrashLoop
	now := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if !c.Allow(now.Add(time.Duration(i)*time.Second), 3, time.Minute) {
			t.Fatalf("recovery %d refused", i)
		}
	}
	if c.Allow(now.Add(10*time.Second), 3, time.Minute) {
		t.Fatal("a fourth recovery within the window was allowed")
	}
	if !c.Allow(now.Add(2*time.Minute), 3, time.Minute) {
		t.Fatal("a recovery after the window was refused")
	}
}

func TestCheckpoints(t *testing.T) {
	cs, err := OpenCheckpoints(filepath.Join(t.TempDir(), "c1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var made []*Checkpoint
	for i := 0; i < 4; i++ {
		cp, err := cs.Commit(criutest.WriteImages)
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, cp)
	}
	// A dump that fails (a full disk) leaves the previous ones as they were.
	if _, err := cs.Commit(func(string) error { return errors.New("no space left on device") }); err == nil {
		t.Fatal("want error")
	}
	list := cs.List()
	if len(list) != 4 || list[0].Seq != made[3].Seq {
		t.Fatalf("list %v", list)
	}
	release := cs.Use(made[0]) // the oldest is being restored
	cs.Prune(2)
	list = cs.List()
	if len(list) != 3 || list[0].Seq != made[3].Seq || list[2].Seq != made[0].Seq {
		t.Fatalf("after prune with one in use: %d left", len(list))
	}
	release()
	cs.Prune(2)
	if len(cs.List()) != 2 {
		t.Fatalf("after release: %d left", len(cs.List()))
	}
	// Root-only.
	fi, _ := os.Stat(list[0].Images)
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("images dir mode %v", fi.Mode().Perm())
	}
	// A corrupted checkpoint does not verify.
	if err := os.WriteFile(filepath.Join(list[0].Images, "inventory.img"), []byte("bad"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Verify(list[0].Images); err == nil {
		t.Fatal("a corrupted checkpoint verified")
	}
	if err := cs.Remove(); err != nil {
		t.Fatal(err)
	}
}

// TestIncrementalCheckpointCommits: a dump on top of a pre-dump holds CRIU's "parent"
// link to it; such a checkpoint commits and verifies (only a template's images must be
// plain files).
func TestIncrementalCheckpointCommits(t *testing.T) {
	cs, err := OpenCheckpoints(filepath.Join(t.TempDir(), "c1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := cs.Commit(func(images string) error {
		if err := criutest.WriteImages(images); err != nil {
			return err
		}
		return os.Symlink("../../pre/images", filepath.Join(images, "parent"))
	})
	if err != nil {
		t.Fatalf("a checkpoint with a parent link: %v", err)
	}
	if err := Verify(cp.Images); err != nil {
		t.Fatal(err)
	}
}
