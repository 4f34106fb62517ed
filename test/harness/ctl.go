package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/warmshim/warm/internal/refillgate"
	"github.com/warmshim/warm/pool"
)

// Ctl talks to a pool shim's control socket (what warmctl uses).
type Ctl struct {
	http *http.Client
}

// NewCtl returns a client of the control socket of namespace ns under runDir.
func NewCtl(runDir, ns string) *Ctl {
	sock := filepath.Join(runDir, ns, "ctl.sock")
	return &Ctl{http: &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}}
}

// Do sends a request and decodes a JSON answer into out (if not nil).
func (c *Ctl) Do(method, path string, out any) error {
	req, err := http.NewRequest(method, "http://warm"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, body)
	}
	if out != nil && len(body) > 0 {
		return json.Unmarshal(body, out)
	}
	return nil
}

// Pool returns the stats of one template's pool (ok false when there is none).
func (c *Ctl) Pool(name string) (pool.Stats, bool, error) {
	var all []pool.Stats
	if err := c.Do("GET", "/pools", &all); err != nil {
		return pool.Stats{}, false, err
	}
	for _, s := range all {
		if s.Template == name {
			return s, true, nil
		}
	}
	return pool.Stats{}, false, nil
}

// RefillPauses is the pool shim's refill gate: how many times it paused refills in
// progress for hits, and for how long in all.
func (c *Ctl) RefillPauses() (int64, time.Duration, error) {
	var st refillgate.Stats
	err := c.Do("GET", "/refills", &st)
	return st.Pauses, st.Paused, err
}
