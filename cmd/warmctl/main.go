// Command warmctl shows and steers the warm pools of a containerd namespace, through the
// pool shim's control socket (<run_dir>/<namespace>/ctl.sock, root-only). With no pool
// shim running (e.g. on a Kubernetes node, where pods' shims serve templates made in
// pods by restore), `template ls` and `template rm` read the template store directly.
// run_dir and state_dir come from warm's configuration ($WARM_CONFIG, else
// /etc/containerd/warm.toml) unless given.
//
//	warmctl [-n NAMESPACE] [--run-dir DIR] [--state-dir DIR] pool ls
//	warmctl pool prewarm TEMPLATE N
//	warmctl pool drain TEMPLATE
//	warmctl template ls
//	warmctl template rm TEMPLATE
//	warmctl recovery ls         the containers with crash recovery: state, checkpoints
//	                            (newest, size, the task's last pause), recoveries, the
//	                            last crash and what became of it (from state_dir)
//	warmctl reload              the pool shim reads its warm.toml again now (it follows it
//	                            anyway) and says what is wrong with it; with no pool shim,
//	                            the file is checked
//	warmctl shutdown            drain every pool and end the imports; the pool shim exits
//	                            when no container is left
//	warmctl start [--address A] [--socket-dir D] [--config F]
//	                            start the pool shim now (at boot) and fill every pool; a
//	                            running one reads its warm.toml again
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/internal/refillgate"
	"github.com/warmshim/warm/oci"
	"github.com/warmshim/warm/pool"
	"github.com/warmshim/warm/store"
)

func main() {
	ns := flag.String("n", envOr("CONTAINERD_NAMESPACE", "default"), "containerd namespace")
	runDir := flag.String("run-dir", "", "warm's run_dir (default: warm.toml's, else /run/warm)")
	stateDir := flag.String("state-dir", "", "warm's state_dir (default: warm.toml's, else /var/lib/warm)")
	asJSON := flag.Bool("json", false, "print JSON")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: warmctl [-n NAMESPACE] [--run-dir DIR] [--state-dir DIR] [--json] pool ls | pool prewarm TEMPLATE N | pool drain TEMPLATE | template ls | template rm TEMPLATE | recovery ls | reload | shutdown")
		fmt.Fprintln(os.Stderr, "       warmctl [-n NAMESPACE] start [--address SOCK] [--socket-dir DIR] [--config FILE] [--shim BIN] [--wait D]")
	}
	flag.Parse()
	if flag.Arg(0) == "start" {
		if err := start(*ns, flag.Args()[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "warmctl:", err)
			os.Exit(1)
		}
		return
	}
	if *runDir == "" || *stateDir == "" {
		cfg, err := config.Load("")
		if err != nil {
			fmt.Fprintln(os.Stderr, "warmctl:", err, "(or give --run-dir and --state-dir)")
			os.Exit(1)
		}
		*runDir = cmp.Or(*runDir, cfg.RunDir)
		*stateDir = cmp.Or(*stateDir, cfg.StateDir)
	}
	c := client(filepath.Join(*runDir, *ns, "ctl.sock"))
	c.ns, c.stateDir = *ns, *stateDir
	if err := run(c, flag.Args(), *asJSON); err != nil {
		fmt.Fprintln(os.Stderr, "warmctl:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

type ctl struct {
	http *http.Client
	sock string
	// ns and stateDir locate the template store, read directly when no pool shim runs.
	ns, stateDir string
}

// noShim reports whether no pool shim serves the namespace (its socket is missing).
func (c *ctl) noShim() bool {
	_, err := os.Stat(c.sock)
	return errors.Is(err, fs.ErrNotExist)
}

func (c *ctl) store() (*store.Store, error) {
	return store.New(filepath.Join(c.stateDir, "templates"))
}

func client(sock string) *ctl {
	return &ctl{sock: sock, http: &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}
}

func (c *ctl) do(method, path string, out any) error {
	req, err := http.NewRequest(method, "http://warm"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if _, serr := os.Stat(c.sock); errors.Is(serr, os.ErrNotExist) {
			return fmt.Errorf("no pool shim for this namespace (%s missing): start a container that names a template", c.sock)
		} else if serr != nil {
			return fmt.Errorf("%s: %w (warmctl needs root)", c.sock, serr)
		}
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s", strings.TrimSpace(string(body)))
	}
	if out != nil && len(body) > 0 {
		return json.Unmarshal(body, out)
	}
	return nil
}

func run(c *ctl, args []string, asJSON bool) error {
	cmd := strings.Join(args, " ")
	switch {
	case cmd == "pool ls" || cmd == "pool list" || cmd == "pools":
		var ps []pool.Stats
		if err := c.do("GET", "/pools", &ps); err != nil {
			return err
		}
		if asJSON {
			return json.NewEncoder(os.Stdout).Encode(ps)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "TEMPLATE\tMODE\tGENERATION\tFROZEN\tRESTORING\tIN USE\tDESIRED\tHITS\tMISSES\tACQUIRE P50\tACQUIRE P99\tHIT P50\tHIT P99\tMEMORY\tMERGED")
		for _, p := range ps {
			// A template made in a pod is served by restore on create (JSON says why).
			mode := "pool"
			if p.RestoreOnly != "" {
				mode = "restore"
			}
			// HIT: the shim's own Create+Start of a pool hit. MERGED: the part of MEMORY
			// that KSM merged (ksm = true).
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%v\t%v\t%v\t%v\t%s\t%s\n", p.Template, mode, p.Generation, p.Frozen, p.Restoring, p.InUse, p.Desired,
				p.Hits, misses(p.Misses), p.P50, p.P99, p.ServeP50.Round(time.Microsecond), p.ServeP99.Round(time.Microsecond), mib(p.Memory), mib(p.Merged))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		var rs refillgate.Stats
		if err := c.do("GET", "/refills", &rs); err == nil && rs.Pauses > 0 {
			fmt.Printf("refills paused for hits: %d times, %v in all\n", rs.Pauses, rs.Paused.Round(time.Millisecond))
		}
		if m, ok, _ := oci.HostCgroupMount(); ok && !m.FavorDynmods() {
			fmt.Fprintln(os.Stderr, "note: cgroup2 is mounted without favordynmods: each hit waits 6 to 33 ms for an RCU grace period (cgroup_favordynmods in warm.toml; docs/pool.md)")
		}
		return nil
	case len(args) == 4 && args[0] == "pool" && args[1] == "prewarm":
		if err := store.ValidName(args[2]); err != nil {
			return err
		}
		if n, err := strconv.Atoi(args[3]); err != nil || n < 0 {
			return fmt.Errorf("pool prewarm %s %q: give the number of sandboxes, 0 or more", args[2], args[3])
		}
		return c.do("POST", "/pools/"+args[2]+"/prewarm?n="+args[3], nil)
	case len(args) == 3 && args[0] == "pool" && args[1] == "drain":
		if err := store.ValidName(args[2]); err != nil {
			return err
		}
		return c.do("POST", "/pools/"+args[2]+"/drain", nil)
	case cmd == "template ls" || cmd == "templates":
		var ts []store.Entry
		if c.noShim() {
			st, err := c.store()
			if err != nil {
				return err
			}
			if ts, err = st.Entries(c.ns); err != nil {
				return err
			}
		} else if err := c.do("GET", "/templates", &ts); err != nil {
			return err
		}
		if asJSON {
			return json.NewEncoder(os.Stdout).Encode(ts)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "TEMPLATE\tCREATED\tSOURCE\tMEMORY")
		for _, t := range ts {
			if t.Error != "" {
				fmt.Fprintf(tw, "%s\t-\tunreadable (not served; `warmctl template rm %s` removes it): %s\t-\n", t.Name, t.Name, t.Error)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Created.Format(time.RFC3339), t.Source, mib(t.MemoryBytes))
		}
		return tw.Flush()
	case len(args) == 3 && args[0] == "template" && (args[1] == "rm" || args[1] == "delete"):
		if err := store.ValidName(args[2]); err != nil {
			return err
		}
		if c.noShim() {
			// No pool holds it; a pod's shim restoring from it holds its lock.
			st, err := c.store()
			if err != nil {
				return err
			}
			return st.Delete(c.ns, args[2])
		}
		return c.do("DELETE", "/templates/"+args[2], nil)
	case cmd == "reload":
		// The pool shim reads its configuration file again (it also does within seconds
		// of a change): an error names the key and the fix. With no pool shim (none was
		// needed yet), the file the next one reads is checked.
		if c.noShim() {
			path := config.Path("")
			if _, err := config.Load(path); err != nil {
				return err
			}
			fmt.Printf("no pool shim runs in namespace %s; %s is valid\n", c.ns, path)
			return nil
		}
		var r struct{ Path string }
		if err := c.do("POST", "/config/reload", &r); err != nil {
			return err
		}
		fmt.Println("reloaded", r.Path)
		return nil
	case cmd == "shutdown":
		return c.do("POST", "/shutdown", nil)
	case cmd == "recovery ls" || cmd == "recovery list" || cmd == "recoveries":
		// Read from the state directory: recovered containers have shims of their own.
		es, err := recoveries(c.stateDir, c.ns)
		if err != nil {
			return err
		}
		if asJSON {
			return printRecoveriesJSON(os.Stdout, es)
		}
		return printRecoveries(os.Stdout, es, time.Now())
	}
	flag.Usage()
	return fmt.Errorf("unknown command %q", cmd)
}

func misses(m map[string]int) string {
	if len(m) == 0 {
		return "0"
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%d %s", v, k))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

func mib(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }
