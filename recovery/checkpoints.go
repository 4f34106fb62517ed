package recovery

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/warmshim/warm/store"
)

// Checkpoints keeps one container's checkpoints in dir: c<seq>/images. A checkpoint is
// written in a temporary directory, verified (CRIU's inventory decodes with go-criu's
// image tools, runc's descriptors.json is there), fsynced, made root-only, and renamed
// into place; only then is it a candidate for restore. Old ones are pruned; one in use
// by a restore is never pruned.
type Checkpoints struct {
	dir    string
	reader *store.Reader // who else reads the images at restore (store.SyncTree)

	mu    sync.Mutex
	inUse map[string]int // checkpoint dir -> restores using it; guarded by mu
}

// Checkpoint is one committed checkpoint.
type Checkpoint struct {
	Seq    int64
	Dir    string
	Images string
}

// OpenCheckpoints opens (creating, root-only) a container's checkpoint directory; reader
// is who else opens the images at restore (store.ReaderOf the container's spec).
func OpenCheckpoints(dir string, reader *store.Reader) (*Checkpoints, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	return &Checkpoints{dir: dir, reader: reader, inUse: map[string]int{}}, nil
}

// Dir is the store's directory.
func (c *Checkpoints) Dir() string { return c.dir }

// Commit writes a new checkpoint: fill writes CRIU images into the directory it gets,
// whose sibling "pre" holds a pre-dump when fill makes one (incremental dumps).
func (c *Checkpoints) Commit(fill func(images string) error) (_ *Checkpoint, retErr error) {
	tmp, err := os.MkdirTemp(c.dir, ".tmp-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			os.RemoveAll(tmp)
		}
	}()
	images := filepath.Join(tmp, "images")
	if err := os.Mkdir(images, 0o700); err != nil {
		return nil, err
	}
	if err := fill(images); err != nil {
		return nil, err
	}
	if err := Verify(images); err != nil {
		return nil, err
	}
	if err := store.SyncTree(tmp, c.reader); err != nil {
		return nil, fmt.Errorf("sync checkpoint: %w", err)
	}
	seq := time.Now().UnixNano()
	final := filepath.Join(c.dir, "c"+strconv.FormatInt(seq, 10))
	if err := os.Rename(tmp, final); err != nil {
		return nil, err
	}
	if d, err := os.Open(c.dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return &Checkpoint{Seq: seq, Dir: final, Images: filepath.Join(final, "images")}, nil
}

// Verify checks a CRIU image directory is complete and readable (store.Verify).
func Verify(images string) error { return store.Verify(images) }

// List returns the committed checkpoints (each verified before its rename), newest first.
func (c *Checkpoints) List() []*Checkpoint { return ListCheckpoints(c.dir) }

// ListCheckpoints returns the committed checkpoints in a container's checkpoint
// directory, newest first, without changing anything there (warmctl reads it).
func ListCheckpoints(dir string) []*Checkpoint {
	entries, _ := os.ReadDir(dir)
	var out []*Checkpoint
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "c") {
			continue
		}
		seq, err := strconv.ParseInt(strings.TrimPrefix(e.Name(), "c"), 10, 64)
		if err != nil {
			continue
		}
		d := filepath.Join(dir, e.Name())
		out = append(out, &Checkpoint{Seq: seq, Dir: d, Images: filepath.Join(d, "images")})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq > out[j].Seq })
	return out
}

// Use marks a checkpoint in use by a restore until release.
func (c *Checkpoints) Use(cp *Checkpoint) (release func()) {
	c.mu.Lock()
	c.inUse[cp.Dir]++
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			c.inUse[cp.Dir]--
			if c.inUse[cp.Dir] <= 0 {
				delete(c.inUse, cp.Dir)
			}
			c.mu.Unlock()
		})
	}
}

// Prune keeps the newest keep checkpoints (and any in use) and removes the rest and
// leftovers of commits that never finished.
func (c *Checkpoints) Prune(keep int) {
	list := c.List()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, cp := range list {
		if i < keep || c.inUse[cp.Dir] > 0 {
			continue
		}
		os.RemoveAll(cp.Dir)
	}
	entries, _ := os.ReadDir(c.dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Minute {
				os.RemoveAll(filepath.Join(c.dir, e.Name()))
			}
		}
	}
}

// Remove deletes every checkpoint (the container is gone).
func (c *Checkpoints) Remove() error { return os.RemoveAll(c.dir) }
