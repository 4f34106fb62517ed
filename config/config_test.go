package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name    string
		text    string
		want    Config
		wantErr []string // substrings the error must contain
	}{
		{name: "empty gives defaults", text: "", want: Default()},
		{name: "all keys", text: "runc = \"/opt/runc\"\nrunc_root = \"/run/warm/runc\"\ncriu = \"/opt/criu\"\ncriu_network_lock = \"nftables\"\nsystemd_cgroup = true\ncgroup_favordynmods = true\nrefill_pause = true\nlog_level = \"debug\"\n",
			want: Config{Runc: "/opt/runc", RuncRoot: "/run/warm/runc", Criu: "/opt/criu", CriuNetworkLock: "nftables", SystemdCgroup: true, CgroupFavorDynmods: true, RefillPause: true, LogLevel: "debug", StateDir: "/var/lib/warm", RunDir: "/run/warm", Recovery: Default().Recovery}},
		{name: "recovery", text: "[recovery]\nenabled = true\nmax_retries = 5\nbackoff = \"1s\"\n", want: func() Config {
			c := Default()
			c.Recovery.Enabled, c.Recovery.MaxRetries, c.Recovery.Backoff = true, 5, Duration{time.Second}
			return c
		}()},
		{name: "bad recovery", text: "[recovery]\nmax_retries = 0\n", wantErr: []string{"recovery.max_retries"}},
		{name: "kill grace", text: "[recovery]\nkill_grace = \"5m\"\n", want: func() Config {
			c := Default()
			c.Recovery.KillGrace = Duration{5 * time.Minute}
			return c
		}()},
		{name: "zero kill grace", text: "[recovery]\nkill_grace = \"0s\"\n", wantErr: []string{"recovery.kill_grace", "positive"}},
		{name: "unknown key", text: "runc_path = \"x\"\n", wantErr: []string{"unknown key runc_path", "allowed keys are", "runc_root"}},
		{name: "bad type", text: "systemd_cgroup = \"yes\"\n", wantErr: []string{"systemd_cgroup"}},
		{name: "bad network lock", text: "criu_network_lock = \"none\"\n", wantErr: []string{"key criu_network_lock", "none", "skip, iptables, nftables"}},
		{name: "bad log level", text: "log_level = \"loud\"\n", wantErr: []string{"key log_level", "loud", "trace, debug, info, warn, error"}},
		{name: "relative runc root", text: "runc_root = \"run\"\n", wantErr: []string{"key runc_root", "absolute"}},
		{name: "empty runc", text: "runc = \"\"\n", wantErr: []string{"key runc"}},
		{name: "syntax", text: "runc = \n", wantErr: []string{"t.toml:1"}},
		{name: "min above max", text: "[pool]\nmin = 5\nmax = 2\n", wantErr: []string{"pool.min and pool.max", "min 5 is greater than max 2"}},
		{name: "per-template min above max", text: "[pools.py]\nmin = 9\n", wantErr: []string{"pools.py.min", "greater than max 4"}},
		{name: "bad duration", text: "[pool]\nacquire_timeout = \"soon\"\n", wantErr: []string{"acquire_timeout", "not a duration"}},
		{name: "bad size", text: "[pool]\nmax_memory = \"lots\"\n", wantErr: []string{"max_memory", "512MiB"}},
		{name: "size overflow", text: "[pool]\nmax_memory = \"9000000000GiB\"\n", wantErr: []string{"max_memory", "too large"}},
		{name: "negative size", text: "[pool]\nmax_memory = -5\n", wantErr: []string{"pool.max_memory", "must not be negative"}},
		{name: "pool name", text: "[pools.\"../x\"]\nmin = 1\n", wantErr: []string{"pools.\"../x\"", "template name"}},
		{name: "unknown pool key", text: "[pool]\nminimum = 1\n", wantErr: []string{"unknown key pool.minimum", "pool.min"}},
		{name: "image in defaults", text: "[pool]\nimage = \"x\"\n", wantErr: []string{"pool.image", "[pools.NAME]"}},
		{name: "relative state dir", text: "state_dir = \"var\"\n", wantErr: []string{"state_dir", "absolute"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.text), "t.toml")
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("want error containing %q, got %+v", tc.wantErr, got)
				}
				for _, s := range tc.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil {
		t.Fatal("a named file that is missing must be an error")
	}
	p := filepath.Join(dir, "w.toml")
	if err := os.WriteFile(p, []byte("log_level = \"warn\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.LogLevel != "warn" || c.Runc != "runc" {
		t.Fatalf("got %+v", c)
	}
}

func TestLoadFromEnv(t *testing.T) {
	p := filepath.Join(t.TempDir(), "env.toml")
	if err := os.WriteFile(p, []byte("log_level = \"error\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvPath, p)
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.LogLevel != "error" {
		t.Fatalf("got %+v", c)
	}
	t.Setenv(EnvPath, p+".missing")
	if _, err := Load(""); err == nil {
		t.Fatal("a missing file named by $WARM_CONFIG must be an error")
	}
}

// The example shipped in the repository (and installed by `make install`) must parse and
// equal the defaults it documents.
func TestShippedExample(t *testing.T) {
	c, err := Load("../warm.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.PoolFor("any"), Default().PoolFor("any")) || c.Runc != "runc" || c.StateDir != "/var/lib/warm" || c.Recovery != Default().Recovery {
		t.Fatalf("warm.toml %+v differs from the defaults %+v", c, Default())
	}
}

func TestPoolFor(t *testing.T) {
	c, err := Parse([]byte(`
[pool]
max = 8
acquire_timeout = "1s"
max_memory = "512MiB"
[pools.py]
min = 3
allow_env = ["REQUEST_ID"]
image = "registry.local/py-checkpoint:1"
ksm = true
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	py := c.PoolFor("py")
	want := Resolved{Min: 3, Max: 8, Initial: 1, RefillBatch: 2, RefillInterval: 100 * time.Millisecond,
		AcquireTimeout: time.Second, IdleTimeout: 10 * time.Minute, MaxMemory: 512 << 20,
		AllowEnv: []string{"REQUEST_ID"}, Image: "registry.local/py-checkpoint:1", KSM: true}
	if !reflect.DeepEqual(py, want) {
		t.Fatalf("py: got %+v\nwant %+v", py, want)
	}
	other := c.PoolFor("other")
	if other.Min != 1 || other.Max != 8 || other.Image != "" || other.AllowEnv != nil || other.KSM {
		t.Fatalf("other: %+v", other)
	}
}
