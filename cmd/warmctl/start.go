package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"google.golang.org/protobuf/proto"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/internal/group"
	"github.com/warmshim/warm/pool"
)

// envBoot is the shim's EnvBoot (a test keeps them equal).
const envBoot = "WARM_BOOT"

// start starts the namespace's pool shim the way containerd's start action would, so
// that containerd's later template containers join it (same socket address: the
// containerd address, the namespace and the group key), and waits for its pools to
// reach their initial size.
func start(ns string, args []string) error {
	fs := flag.NewFlagSet("start", flag.ContinueOnError)
	address := fs.String("address", "/run/containerd/containerd.sock", "containerd's gRPC socket (its [grpc] address)")
	socketDir := fs.String("socket-dir", "/run/containerd/s", "containerd's shim socket directory (<containerd state dir>/s unless socket_dir is set)")
	cfgPath := fs.String("config", "", "warm's configuration (default $WARM_CONFIG, else "+config.DefaultPath+")")
	shimBin := fs.String("shim", "", "the containerd-shim-warm-v2 binary (default: beside warmctl, else in PATH)")
	wait := fs.Duration("wait", 2*time.Minute, "wait this long for every pool to hold its initial sandboxes (0: do not wait)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	c := client(filepath.Join(cfg.RunDir, ns, "ctl.sock"))
	var ps []pool.Stats
	if err := c.do("GET", "/pools", &ps); err == nil {
		// It reads its configuration again, and resumes its imports if an operator shut
		// it down while containers kept it running. A configuration it cannot take is
		// said, but the pool shim runs: start succeeds.
		fmt.Printf("pool shim of namespace %s already running\n", ns)
		if err := c.do("POST", "/config/reload", nil); err != nil {
			fmt.Fprintf(os.Stderr, "warmctl: warning: the running pool shim kept its configuration: %v\n", err)
		}
	} else {
		bin, err := shimBinary(*shimBin)
		if err != nil {
			return err
		}
		if err := spawn(bin, ns, *address, *socketDir, *cfgPath, filepath.Join(cfg.RunDir, ns, "boot")); err != nil {
			return err
		}
	}
	return waitFilled(c, *wait)
}

func shimBinary(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if self, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(self), "containerd-shim-warm-v2"); isExec(p) {
			return p, nil
		}
	}
	p, err := exec.LookPath("containerd-shim-warm-v2")
	if err != nil {
		return "", fmt.Errorf("containerd-shim-warm-v2 not found beside warmctl or in PATH; name it with --shim")
	}
	return p, nil
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// spawn runs the shim's start action in a bundle directory of its own.
func spawn(bin, ns, address, socketDir, cfgPath, dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	spec, _ := json.Marshal(map[string]any{"annotations": map[string]string{group.Annotation: group.Pool}})
	if err := os.WriteFile(filepath.Join(dir, "config.json"), spec, 0o600); err != nil {
		return err
	}
	// The shim logs to "log" in its bundle (a FIFO containerd reads, for a container's
	// shim); a plain file here. The pool shim's own log is <run_dir>/<ns>/pool-shim.log.
	if err := os.WriteFile(filepath.Join(dir, "log"), nil, 0o600); err != nil {
		return err
	}
	params := &bootapi.BootstrapParams{
		InstanceID: group.Pool, Namespace: ns, LogLevel: bootapi.LogLevel_LOG_LEVEL_INFO,
		ContainerdGrpcAddress: address, ContainerdTtrpcAddress: address + ".ttrpc", SocketDir: &socketDir,
	}
	in, err := proto.Marshal(params)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "-namespace", ns, "-address", address, "-id", group.Pool, "-bundle", dir, "start")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(in)
	cmd.Env = append(os.Environ(), envBoot+"=1", "TTRPC_ADDRESS="+address+".ttrpc", "GRPC_ADDRESS="+address, "NAMESPACE="+ns)
	if cfgPath != "" {
		abs, err := filepath.Abs(cfgPath)
		if err != nil {
			return err
		}
		cmd.Env = append(cmd.Env, config.EnvPath+"="+abs)
	}
	// A file, not a pipe: the shim the start action launches keeps it as its stderr (a
	// panic or a SIGQUIT goroutine dump of the pool shim lands in <run_dir>/<ns>/boot/stderr).
	errPath := filepath.Join(dir, "stderr")
	errFile, err := os.OpenFile(errPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer errFile.Close()
	cmd.Stderr = errFile
	out, err := cmd.Output()
	if err != nil {
		msg, _ := os.ReadFile(errPath)
		return fmt.Errorf("start the pool shim: %w: %s", err, strings.TrimSpace(string(msg)))
	}
	var res bootapi.BootstrapResult
	if err := proto.Unmarshal(out, &res); err != nil || res.Address == "" {
		return fmt.Errorf("start the pool shim: no address in its answer (%q)", out)
	}
	// Where containerd keeps a shim's address: the shim removes its socket when it exits.
	if err := os.WriteFile(filepath.Join(dir, "address"), []byte(res.Address), 0o600); err != nil {
		return err
	}
	fmt.Printf("pool shim of namespace %s started at %s\n", ns, res.Address)
	return nil
}

// waitFilled waits until the pool shim answers and every pool holds its initial
// sandboxes, or has restores failing with none in flight (reported, not waited for: a
// template whose restore fails, e.g. one that bind-mounts a file that is gone, would
// never fill). A shim with no template exits on its own.
func waitFilled(c *ctl, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		var ps []pool.Stats
		err := c.do("GET", "/pools", &ps)
		settled := err == nil
		for _, p := range ps {
			if p.Frozen < p.Desired && !(p.Failed > 0 && p.Restoring == 0) {
				settled = false
			}
		}
		switch {
		case settled:
			for _, p := range ps {
				if p.Frozen < p.Desired {
					fmt.Fprintf(os.Stderr, "warmctl: pool %s: %d of %d frozen, %d restores failed (see run_dir/<namespace>/pool-shim.log)\n",
						p.Template, p.Frozen, p.Desired, p.Failed)
				} else {
					fmt.Printf("pool %s: %d frozen\n", p.Template, p.Frozen)
				}
			}
			if len(ps) == 0 {
				fmt.Println("no template in this namespace yet")
			}
			return nil
		case wait == 0 && err == nil:
			return nil
		case time.Now().After(deadline):
			if err != nil {
				return fmt.Errorf("the pool shim did not answer: %w", err)
			}
			return errors.New("pools still filling; see warmctl pool ls")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
