package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/containerd/log"

	"github.com/warmshim/warm/oci"
	"github.com/warmshim/warm/pool"
	"github.com/warmshim/warm/store"
)

// ctlServer is the pool shim's control API for warmctl: HTTP on a root-only unix socket
// (<run_dir>/<namespace>/ctl.sock).
type ctlServer struct {
	srv  *http.Server
	path string
}

func startCtl(path string, w *warm) (*ctlServer, error) {
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /pools", func(rw http.ResponseWriter, r *http.Request) {
		writeJSON(rw, w.poolStats())
	})
	mux.HandleFunc("POST /pools/{name}/prewarm", func(rw http.ResponseWriter, r *http.Request) {
		p := w.poolNamed(r.PathValue("name"))
		if p == nil {
			http.Error(rw, "no pool for template "+r.PathValue("name"), http.StatusNotFound)
			return
		}
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 {
			http.Error(rw, "n must be a number of sandboxes", http.StatusBadRequest)
			return
		}
		w.markDrained(p.Name(), false)
		w.resume(r.Context())
		p.Prewarm(n)
		writeJSON(rw, p.Stats())
	})
	mux.HandleFunc("POST /pools/{name}/drain", func(rw http.ResponseWriter, r *http.Request) {
		p := w.poolNamed(r.PathValue("name"))
		if p == nil {
			http.Error(rw, "no pool for template "+r.PathValue("name"), http.StatusNotFound)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
		defer cancel()
		// The pool stays drained in the next pool shim of the namespace too.
		w.markDrained(p.Name(), true)
		if err := p.Drain(ctx); err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(rw, p.Stats())
	})
	mux.HandleFunc("POST /config/reload", func(rw http.ResponseWriter, r *http.Request) {
		path, err := w.reloadNow(r.Context())
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(rw, map[string]string{"path": path})
	})
	mux.HandleFunc("POST /shutdown", func(rw http.ResponseWriter, r *http.Request) {
		// Drain every pool and end the imports; the shim exits once no container remains.
		ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
		defer cancel()
		w.stop()
		if err := w.drainAll(ctx); err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		rw.WriteHeader(http.StatusNoContent)
		// The answer goes out before the shim may exit.
		_ = http.NewResponseController(rw).Flush()
		if w.onIdle != nil {
			go w.onIdle()
		}
	})
	mux.HandleFunc("GET /refills", func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		g := w.gate
		w.mu.Unlock()
		writeJSON(rw, g.Stats())
	})
	mux.HandleFunc("GET /templates", func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		st, ns := w.store, w.ns
		w.mu.Unlock()
		out, err := st.Entries(ns)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		for i := range out {
			out[i].Spec = nil
		}
		writeJSON(rw, out)
	})
	mux.HandleFunc("POST /templates/{name}/refresh", func(rw http.ResponseWriter, r *http.Request) {
		name, ok := templateName(rw, r)
		if !ok {
			return
		}
		if err := w.refreshTemplate(name); err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		rw.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /templates/{name}", func(rw http.ResponseWriter, r *http.Request) {
		name, ok := templateName(rw, r)
		if !ok {
			return
		}
		if err := w.deleteTemplate(r.Context(), name); err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, store.ErrInUse) {
				code = http.StatusConflict
			} else if errors.Is(err, store.ErrNotFound) {
				code = http.StatusNotFound
			}
			http.Error(rw, err.Error(), code)
			return
		}
		rw.WriteHeader(http.StatusNoContent)
	})
	s := &ctlServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, path: path}
	go func() { _ = s.srv.Serve(l) }()
	return s, nil
}

// templateName is the request's {name}, a valid template name, or a 400 answer.
func templateName(rw http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if err := store.ValidName(name); err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return "", false
	}
	return name, true
}

func (s *ctlServer) close() {
	_ = s.srv.Close()
	_ = os.Remove(s.path)
}

func writeJSON(rw http.ResponseWriter, v any) {
	rw.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(rw).Encode(v)
}

// notifyPoolShim tells the namespace's pool shim, if one runs, that this shim committed
// a new generation of a template (refreshTemplate there).
func (w *warm) notifyPoolShim(name string) {
	w.mu.Lock()
	sock := filepath.Join(w.cfg.RunDir, w.ns, "ctl.sock")
	w.mu.Unlock()
	if _, err := os.Stat(sock); err != nil {
		return // none runs: the next one loads the template from the store
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	resp, err := c.Post("http://warm/templates/"+name+"/refresh", "", nil)
	if err != nil {
		log.L.WithError(err).WithField("template", name).Warn("pool shim not told of the new template generation")
		return
	}
	resp.Body.Close()
}

// drainedPath marks a pool an operator drained, for the namespace's next pool shim:
// run_dir/<namespace>/drained/<template> (run_dir is a tmpfs: a reboot forgets it).
func (w *warm) drainedPath(name string) string {
	return filepath.Join(w.cfg.RunDir, w.ns, "drained", name)
}

// markDrained records (or, on prewarm, forgets) that an operator drained a pool.
func (w *warm) markDrained(name string, drained bool) {
	w.mu.Lock()
	path := w.drainedPath(name)
	w.mu.Unlock()
	if !drained {
		_ = os.Remove(path)
		return
	}
	err := os.MkdirAll(filepath.Dir(path), 0o700)
	if err == nil {
		err = os.WriteFile(path, nil, 0o600)
	}
	if err != nil {
		log.L.WithError(err).WithField("template", name).Warn("drained pool: the next pool shim will refill it")
	}
}

func (w *warm) poolNamed(name string) *pool.Pool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pools[name]
}

func (w *warm) poolStats() []pool.Stats {
	w.mu.Lock()
	pools := make([]*pool.Pool, 0, len(w.pools))
	for _, p := range w.pools {
		pools = append(pools, p)
	}
	frozen := map[*pool.Pool][]*oci.Sandbox{}
	for _, ref := range w.frozen {
		frozen[ref.pool] = append(frozen[ref.pool], ref.sb)
	}
	w.mu.Unlock()
	out := make([]pool.Stats, 0, len(pools))
	for _, p := range pools {
		st := p.Stats()
		for _, sb := range frozen[p] {
			st.Merged += sb.MergedBytes()
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Template < out[j].Template })
	return out
}

// deleteTemplate drains the template's pool and removes it, unless a container uses a
// sandbox or a restore from it.
func (w *warm) deleteTemplate(ctx context.Context, name string) error {
	w.mu.Lock()
	p, st, ns := w.pools[name], w.store, w.ns
	w.mu.Unlock()
	if p != nil {
		if err := p.CloseUnused(ctx); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		w.mu.Lock()
		delete(w.pools, name)
		w.mu.Unlock()
	}
	if err := st.Delete(ns, name); err != nil {
		return err
	}
	w.mu.Lock()
	rootfs := w.rootfs
	w.mu.Unlock()
	if rootfs != nil {
		if err := rootfs.ForgetTemplate(ctx, name, ""); err != nil {
			log.G(ctx).WithError(err).WithField("template", name).Warn("lease on the deleted template's image snapshot")
		}
	}
	return nil
}
