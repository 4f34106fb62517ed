package shim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warmshim/warm/config"
	"github.com/warmshim/warm/store"
)

func TestKeepStartKeys(t *testing.T) {
	cur := config.Default()
	next := cur
	next.Runc, next.StateDir, next.RefillPause = "/other/runc", "/other/state", !cur.RefillPause
	next.Pools = map[string]config.Pool{"app": {Image: "reg/x:1"}}
	got, kept := keepStartKeys(cur, next)
	if got.Runc != cur.Runc || got.StateDir != cur.StateDir || got.RefillPause != cur.RefillPause {
		t.Fatalf("start keys changed: %+v", got)
	}
	if got.PoolFor("app").Image != "reg/x:1" {
		t.Fatal("a pool's key was not taken")
	}
	if strings.Join(kept, ",") != "runc,refill_pause,state_dir" {
		t.Fatalf("kept %v", kept)
	}
	if _, kept := keepStartKeys(cur, cur); len(kept) != 0 {
		t.Fatalf("kept %v for the same configuration", kept)
	}
}

// TestConfigFileFollowed: the pool shim takes an edit of its configuration file without
// a Create (here: the checkpoint image a pool names), keeps its configuration when the
// file is broken (warmctl reload says why), and keeps the keys it was started with.
func TestConfigFileFollowed(t *testing.T) {
	defer func(r, m time.Duration) { importRetry, importRetryMax = r, m }(importRetry, importRetryMax)
	importRetry, importRetryMax = time.Hour, time.Hour
	path := filepath.Join(t.TempDir(), "warm.toml")
	write := func(body string) {
		t.Helper()
		// A new file each time: an edit within the clock's resolution still differs.
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("[pools.app]\nimage = \"reg/ckpt:a\"\n")
	cfg, v, err := config.LoadVersion(path)
	if err != nil {
		t.Fatal(err)
	}
	w := imageWarm(true, "reg/ckpt:a")
	w.cfg, w.cfgPath, w.cfgSeen = cfg, path, v
	var mu sync.Mutex
	var refs []string
	w.importFn = func(_ context.Context, _ *store.Store, _, _, ref string) (*store.Template, error) {
		mu.Lock()
		defer mu.Unlock()
		refs = append(refs, ref)
		return nil, nil
	}
	imported := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(refs, " ")
	}
	settle := func() {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); w.importsInFlight(); {
			if time.Now().After(deadline) {
				t.Fatal("imports did not end")
			}
			time.Sleep(time.Millisecond)
		}
	}
	ctx := context.Background()
	w.checkConfig(ctx) // unchanged: nothing to do
	settle()
	if got := imported(); got != "" {
		t.Fatalf("imports %q without a change", got)
	}
	write("[pools.app]\nimage = \"reg/ckpt:b\"\nmin = 2\n")
	// Taken once it held still from one look to the next (not read half-written).
	w.checkConfig(ctx)
	if m := w.cfg.PoolFor("app").Min; m == 2 {
		t.Fatal("a change was taken at the first look")
	}
	w.checkConfig(ctx)
	// The sync runs in the background.
	for deadline := time.Now().Add(5 * time.Second); imported() == "" && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	settle()
	if got := imported(); got != "reg/ckpt:b" {
		t.Fatalf("imports %q after the edit, want reg/ckpt:b", got)
	}
	if m := w.cfg.PoolFor("app").Min; m != 2 {
		t.Fatalf("min %d after the edit, want 2", m)
	}
	// A broken file: the configuration stays, and warmctl reload says what is wrong.
	write("[pools.app]\nimage = \"reg/ckpt:c\"\nmni = 3\n")
	w.checkConfig(ctx)
	w.checkConfig(ctx)
	if m := w.cfg.PoolFor("app"); m.Min != 2 || m.Image != "reg/ckpt:b" {
		t.Fatalf("a broken file changed the configuration: %+v", m)
	}
	// A removed file: the configuration stays.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	w.checkConfig(ctx)
	w.checkConfig(ctx)
	if m := w.cfg.PoolFor("app"); m.Min != 2 || m.Image != "reg/ckpt:b" {
		t.Fatalf("a removed file changed the configuration: %+v", m)
	}
	write("[pools.app]\nimage = \"reg/ckpt:c\"\nmni = 3\n")
	if _, err := w.reloadNow(ctx); err == nil || !strings.Contains(err.Error(), "mni") {
		t.Fatalf("reload of a broken file: %v, want an error naming the key", err)
	}
	// The keys the pool shim started with stay; the pool's are taken.
	write("runc = \"/other/runc\"\n[pools.app]\nimage = \"reg/ckpt:b\"\nmin = 1\n")
	if _, err := w.reloadNow(ctx); err != nil {
		t.Fatal(err)
	}
	if w.cfg.Runc != cfg.Runc || w.cfg.PoolFor("app").Min != 1 {
		t.Fatalf("after reload: runc %q (want %q), min %d (want 1)", w.cfg.Runc, cfg.Runc, w.cfg.PoolFor("app").Min)
	}
	settle()
	// A configuration from a runtime option's body: no file to follow.
	w.mu.Lock()
	w.cfgPath = ""
	w.mu.Unlock()
	if _, err := w.reloadNow(ctx); err == nil {
		t.Fatal("reload without a file succeeded")
	}
}

// TestImportsHoldThePoolShim: a pool shim stays up while it retries the import of a
// configured checkpoint image (at boot the image may not be pulled yet), and an
// operator's shutdown ends the imports and lets it go.
func TestImportsHoldThePoolShim(t *testing.T) {
	defer func(r, m time.Duration) { importRetry, importRetryMax = r, m }(importRetry, importRetryMax)
	importRetry, importRetryMax = time.Millisecond, 2*time.Millisecond
	w := imageWarm(true, "reg/ckpt:a")
	tries, idle := failingImports(w)
	w.syncImageTemplates(context.Background())
	<-tries
	<-tries // retrying
	if !w.holdsPools() {
		t.Fatal("a pool shim retrying an import does not hold up")
	}
	w.stop()
	select {
	case <-idle:
	case <-time.After(5 * time.Second):
		t.Fatal("the import loop did not end on shutdown")
	}
	if w.holdsPools() || w.importsInFlight() {
		t.Fatal("the pool shim still holds up after shutdown")
	}
	w.syncImageTemplates(context.Background())
	if w.importsInFlight() {
		t.Fatal("an import started after shutdown")
	}
}

// TestSyncEndsAnImportNoLongerConfigured: an import waiting to retry for a pool the
// configuration no longer has ends when the configuration is synced, not at its next
// retry (up to 10 minutes later), so a pool shim held up by it can go.
func TestSyncEndsAnImportNoLongerConfigured(t *testing.T) {
	defer func(r, m time.Duration) { importRetry, importRetryMax = r, m }(importRetry, importRetryMax)
	importRetry, importRetryMax = time.Hour, time.Hour
	w := imageWarm(true, "reg/ckpt:a")
	tries, idle := failingImports(w)
	w.syncImageTemplates(context.Background())
	<-tries // now waiting an hour to retry
	w.mu.Lock()
	w.cfg = config.Default()
	w.mu.Unlock()
	w.syncImageTemplates(context.Background())
	select {
	case <-idle:
	case <-time.After(5 * time.Second):
		t.Fatal("the import of a pool no longer configured waits for its retry")
	}
	if w.importsInFlight() {
		t.Fatal("import still in flight")
	}
}

// failingImports makes w's imports fail ("not pulled yet"), each try signalled on tries,
// and its onIdle signal idle.
func failingImports(w *warm) (tries, idle chan struct{}) {
	tries, idle = make(chan struct{}, 100), make(chan struct{}, 1)
	w.importFn = func(context.Context, *store.Store, string, string, string) (*store.Template, error) {
		select {
		case tries <- struct{}{}:
		default:
		}
		return nil, errors.New("not pulled yet")
	}
	w.onIdle = func() { idle <- struct{}{} }
	return tries, idle
}
