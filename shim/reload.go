package shim

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/log"

	"github.com/warmshim/warm/config"
)

// configPoll is how often the pool shim looks whether its configuration file changed:
// one stat.
const configPoll = 2 * time.Second

// watchConfig reloads the pool shim's configuration when its file changes, until ctx
// ends: an edit of a pool's settings or checkpoint image applies without a Create.
func (w *warm) watchConfig(ctx context.Context, interval time.Duration) {
	every(ctx, interval, w.checkConfig)
}

// every calls fn(ctx) every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}

// checkConfig reloads the configuration if its file changed since it was last read and
// then held still until this look (an editor writing in place is not read half-way). A
// file that cannot be used is logged once per change, and a removed one once: the
// configuration stays.
func (w *warm) checkConfig(ctx context.Context) {
	w.mu.Lock()
	path, seen, pending := w.cfgPath, w.cfgSeen, w.cfgPending
	var now config.Version
	if path != "" {
		now = config.VersionOf(path)
	}
	switch {
	case path == "" || now == seen:
		w.cfgPending = config.Version{}
		w.mu.Unlock()
		return
	case now == config.Version{}:
		w.cfgSeen, w.cfgPending = now, config.Version{}
		w.mu.Unlock()
		log.G(ctx).WithField("path", path).Warn("warm config file removed: the pool shim keeps the configuration it has")
		return
	case now != pending:
		w.cfgPending = now
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	if _, err := w.reloadConfig(ctx, path); err != nil {
		log.G(ctx).WithError(err).Error("warm config changed but cannot be used: the pool shim keeps the configuration it has (`warmctl reload` says when a fix is taken)")
	}
}

// reloadConfig reads the configuration at path (the one the pool shim follows) and
// applies it: every pool's settings, the checkpoint images to import, the log level.
// The keys a pool shim is started with keep their values until it starts again (it
// says which changed). A file that changed while it was read is not applied.
func (w *warm) reloadConfig(ctx context.Context, path string) (config.Config, error) {
	cfg, v, err := config.LoadVersion(path)
	if err == nil && config.VersionOf(path) != v {
		return config.Config{}, fmt.Errorf("warm config %s changed while it was read: read again at the next look (or `warmctl reload`)", path)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if path == w.cfgPath {
		w.cfgSeen, w.cfgPending = v, config.Version{} // a bad version is reported once
	}
	if err != nil {
		return config.Config{}, err
	}
	merged, kept := keepStartKeys(w.cfg, cfg)
	w.cfg = merged
	for name, p := range w.pools {
		p.SetConfig(merged.PoolFor(name))
	}
	if imagesOf(merged) != w.syncedImages {
		w.syncedImages = imagesOf(merged)
		go w.syncImageTemplates(ctx)
	}
	applyConfig(taskOptions{cfg: merged})
	l := log.G(ctx).WithField("path", path)
	if len(kept) > 0 {
		l.WithField("unchanged", strings.Join(kept, ", ")).Warn("warm config: these keys apply when the pool shim starts again (`warmctl shutdown`, then a Create or `warmctl start`)")
	}
	l.Info("warm config reloaded")
	return merged, nil
}

// reloadNow is `warmctl reload` (and `warmctl start` of a running pool shim): the pool
// shim reads its configuration file again now, and resumes imports an operator's
// shutdown ended.
func (w *warm) reloadNow(ctx context.Context) (string, error) {
	w.mu.Lock()
	path := w.cfgPath
	w.mu.Unlock()
	if path == "" {
		return "", fmt.Errorf("the pool shim's configuration came in a runtime option (ConfigBody), not from a file: a Create with the new one brings it")
	}
	if _, err := w.reloadConfig(ctx, path); err != nil {
		return path, err
	}
	w.resume(ctx)
	return path, nil
}

// resume undoes an operator's shutdown (stop) when the operator asks for pools again
// (prewarm, reload, start): imports of the configured images start again.
func (w *warm) resume(ctx context.Context) {
	w.mu.Lock()
	was := w.stopping
	w.stopping = false
	w.mu.Unlock()
	if was {
		w.syncImageTemplates(ctx)
	}
}

// keepStartKeys returns next with the keys a running pool shim was started with taken
// from cur (its runc, CRIU and directories are those of its sandboxes and sockets), and
// the names of those that next changes.
func keepStartKeys(cur, next config.Config) (config.Config, []string) {
	var kept []string
	keep(&kept, "runc", cur.Runc, &next.Runc)
	keep(&kept, "runc_root", cur.RuncRoot, &next.RuncRoot)
	keep(&kept, "criu", cur.Criu, &next.Criu)
	keep(&kept, "systemd_cgroup", cur.SystemdCgroup, &next.SystemdCgroup)
	keep(&kept, "cgroup_favordynmods", cur.CgroupFavorDynmods, &next.CgroupFavorDynmods)
	keep(&kept, "refill_pause", cur.RefillPause, &next.RefillPause)
	keep(&kept, "state_dir", cur.StateDir, &next.StateDir)
	keep(&kept, "run_dir", cur.RunDir, &next.RunDir)
	return next, kept
}

// keep sets *next to cur, adding name to kept if that changed it.
func keep[T comparable](kept *[]string, name string, cur T, next *T) {
	if *next != cur {
		*kept = append(*kept, name)
		*next = cur
	}
}
