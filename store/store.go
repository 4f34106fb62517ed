// Package store keeps templates: checkpoints of initialised applications with what is
// needed to restore them. Templates hold process memory, so everything is root-only
// (directories 0700, files 0600), and every write is atomic: a template is built in a
// temporary directory, fsynced, renamed into place and the parent fsynced, and only
// then made current by an atomic symlink swap. A crash or a full disk never leaves a
// half-written template that looks valid.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/magic"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/warmshim/warm/internal/ident"
)

// ErrNotFound is returned for a template that does not exist.
var ErrNotFound = errors.New("template not found")

// ErrInUse is returned when deleting a template that sandboxes still use.
var ErrInUse = errors.New("template in use")

// Meta describes a template.
type Meta struct {
	Name      string    `json:"name"`
	Namespace string    `json:"namespace"`
	Created   time.Time `json:"created"`
	// Source says how the template was made: "annotation" or "image:<ref>".
	Source string `json:"source"`
	// Spec is the OCI spec of the container the checkpoint was taken from.
	Spec *specs.Spec `json:"spec"`
	// Layers identifies the image layers of the root filesystem (the overlay lowerdir
	// of the maker's rootfs): a request is only served from the pool on the same layers.
	Layers string `json:"layers"`
	// Snapshotter and SnapshotParent are what a pooled sandbox's rootfs is prepared from.
	Snapshotter    string `json:"snapshotter"`
	SnapshotParent string `json:"snapshot_parent"`
	// MemoryBytes is the resident memory of the application when it was checkpointed.
	MemoryBytes int64 `json:"memory_bytes"`
}

// Template is one committed generation of a named template.
type Template struct {
	Meta
	// Generation orders the versions of a name; a replaced template has a higher one.
	Generation int64
	// Dir is the generation's directory; Images holds the CRIU images.
	Dir    string
	Images string
}

// validName reports whether name is 1-63 letters, digits, '.', '_' or '-', starting
// with a letter or digit.
func validName(name string) bool { return ident.Valid(name, 63) }

// ValidName checks a template name, with a message that says what is allowed.
func ValidName(name string) error {
	if !validName(name) {
		return fmt.Errorf("template name %q: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// validNamespace reports whether ns can be a directory name of the store: a containerd
// namespace (at most 76 characters).
func validNamespace(ns string) bool { return ident.Valid(ns, 76) }

// validRef checks the namespace and name of a template before they become a path.
func validRef(ns, name string) error {
	if !validNamespace(ns) {
		return fmt.Errorf("namespace %q: not a containerd namespace (letters, digits, '.', '_' or '-', starting with a letter or digit)", ns)
	}
	return ValidName(name)
}

// Store is a directory of templates: <root>/<namespace>/<name>/{g<generation>/, current}.
type Store struct {
	root string

	mu    sync.Mutex
	inUse map[string]int // generation dir -> users; guarded by mu
}

// New opens (creating it root-only) the store at root.
func New(root string) (*Store, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("template store: %w", err)
	}
	if err := os.Chmod(root, 0o700); err != nil {
		return nil, fmt.Errorf("template store: %w", err)
	}
	return &Store{root: root, inUse: map[string]int{}}, nil
}

// Root is the store's directory.
func (s *Store) Root() string { return s.root }

func (s *Store) nameDir(ns, name string) string { return filepath.Join(s.root, ns, name) }

// lockName takes the exclusive flock of a template name's directory (its ".lock" file),
// across processes: making a generation current and pruning never interleave.
func lockName(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// Commit writes a new generation of a template atomically. fill writes the CRIU images
// into the directory it is given; it runs before anything is visible. On any error the
// partial generation is removed and the current one (if any) is untouched.
func (s *Store) Commit(meta Meta, fill func(imagesDir string) error) (_ *Template, retErr error) {
	if err := validRef(meta.Namespace, meta.Name); err != nil {
		return nil, err
	}
	dir := s.nameDir(meta.Namespace, meta.Name)
	var tmp string
	var held *os.File
	var err error
	// A name's directory removed between the two steps (a Delete, or a failed first
	// commit's cleanup, of another process) is made again.
	for attempt := 0; ; attempt++ {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("template %s: %w", meta.Name, err)
		}
		tmp, held, err = newCommitDir(dir)
		if err == nil || !errors.Is(err, fs.ErrNotExist) || attempt == 2 {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", meta.Name, err)
	}
	defer held.Close()
	defer func() {
		if retErr != nil {
			os.RemoveAll(tmp)
			removeIfEmpty(dir)
		}
	}()
	if err := os.Chmod(tmp, 0o700); err != nil {
		return nil, err
	}
	images := filepath.Join(tmp, "images")
	if err := os.Mkdir(images, 0o700); err != nil {
		return nil, err
	}
	if err := fill(images); err != nil {
		return nil, fmt.Errorf("template %s: write checkpoint: %w", meta.Name, err)
	}
	if err := plainFiles(images); err != nil {
		return nil, fmt.Errorf("template %s: %w", meta.Name, err)
	}
	if err := Verify(images); err != nil {
		return nil, fmt.Errorf("template %s: %w", meta.Name, err)
	}
	data, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "meta.json"), data, 0o600); err != nil {
		return nil, fmt.Errorf("template %s: %w", meta.Name, err)
	}
	if err := SyncTree(tmp, ReaderOf(meta.Spec)); err != nil {
		return nil, fmt.Errorf("template %s: sync: %w", meta.Name, err)
	}
	gen, final, err := s.publish(dir, tmp)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", meta.Name, err)
	}
	s.pruneOld(meta.Namespace, meta.Name)
	return &Template{Meta: meta, Generation: gen, Dir: final, Images: filepath.Join(final, "images")}, nil
}

// removeIfEmpty removes a template name's directory that holds no generation and no
// commit in progress (only its lock file): what a failed first commit leaves.
func removeIfEmpty(dir string) {
	unlock, err := lockName(dir)
	if err != nil {
		return
	}
	defer unlock()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Name() != ".lock" {
			return
		}
	}
	os.RemoveAll(dir)
}

// newCommitDir makes a commit's temporary directory and takes its flock, under the
// name's lock (so no prune sees it unlocked). The commit holds the flock until it
// returns: a prune (of this process or another) leaves the directory alone while it is
// written, and once renamed into a generation until it is current (the flock goes with
// the directory).
func newCommitDir(dir string) (tmp string, held *os.File, err error) {
	unlock, err := lockName(dir)
	if err != nil {
		return "", nil, err
	}
	defer unlock()
	if tmp, err = os.MkdirTemp(dir, ".tmp-"); err != nil {
		return "", nil, err
	}
	if held, err = os.Open(tmp); err == nil {
		if err = syscall.Flock(int(held.Fd()), syscall.LOCK_EX); err != nil {
			held.Close()
		}
	}
	if err != nil {
		os.RemoveAll(tmp)
		return "", nil, fmt.Errorf("lock: %w", err)
	}
	return tmp, held, nil
}

// publish renames the written generation tmp into place and makes it current, under the
// name's lock. Generations only grow, even if the clock steps back.
func (s *Store) publish(dir, tmp string) (gen int64, final string, err error) {
	unlock, err := lockName(dir)
	if err != nil {
		return 0, "", err
	}
	defer unlock()
	gen = time.Now().UnixNano()
	if target, err := os.Readlink(filepath.Join(dir, "current")); err == nil {
		if cur, err := strconv.ParseInt(strings.TrimPrefix(target, "g"), 10, 64); err == nil && gen <= cur {
			gen = cur + 1
		}
	}
	final = filepath.Join(dir, "g"+strconv.FormatInt(gen, 10))
	if err := os.Rename(tmp, final); err != nil {
		return 0, "", err
	}
	// From here the generation exists; "current" makes it the one served.
	link := filepath.Join(dir, "current")
	tmpLink := filepath.Join(dir, ".current-"+strconv.FormatInt(gen, 10))
	if err := os.Symlink(filepath.Base(final), tmpLink); err != nil {
		os.RemoveAll(final)
		return 0, "", err
	}
	if err := os.Rename(tmpLink, link); err != nil {
		os.Remove(tmpLink)
		os.RemoveAll(final)
		return 0, "", err
	}
	// The generation is current now whatever follows: a failed sync of the directory
	// (the link's durability across a crash) must not report it as not made.
	_ = syncDir(dir)
	return gen, final, nil
}

// Verify checks that a directory holds a complete, readable CRIU image set: runc's
// descriptors.json is there and CRIU's inventory (written last) decodes: go-criu's image
// magic, then one entry whose protobuf carries img_version. (Decoding by hand rather than
// with go-criu's crit keeps crit's ~60 registered protobuf files out of the shim's start.)
func Verify(images string) error {
	if fi, err := os.Stat(filepath.Join(images, "descriptors.json")); err != nil || fi.Size() == 0 {
		return fmt.Errorf("checkpoint in %s is incomplete: descriptors.json missing or empty", images)
	}
	data, err := readAtMost(filepath.Join(images, "inventory.img"), 64<<10) // CRIU writes about 100 bytes
	if err != nil {
		return fmt.Errorf("checkpoint in %s is incomplete: %w", images, err)
	}
	if err := decodeInventory(data); err != nil {
		return fmt.Errorf("checkpoint in %s is unreadable: inventory.img: %w", images, err)
	}
	return nil
}

// readAtMost reads a file, or its first n bytes.
func readAtMost(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}

// plainFiles refuses a template's images that hold anything but plain files and
// directories (a checkpoint image pulled from a registry is not trusted): a symbolic
// link would have CRIU read another file at restore, and opening a FIFO or a device to
// verify or sync it blocks or acts. (A recovery checkpoint, CRIU's own dump, may hold
// CRIU's "parent" link to a pre-dump.)
func plainFiles(images string) error {
	return filepath.WalkDir(images, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if t := d.Type(); t&^fs.ModeDir != 0 {
			rel, _ := filepath.Rel(images, p)
			return fmt.Errorf("checkpoint in %s holds %s, which is not a regular file (%s): refused", images, rel, t.Type())
		}
		return nil
	})
}

// criuMagic is built on first use: a map of every CRIU image magic, which a cold
// container's shim never needs.
var criuMagic = sync.OnceValue(magic.LoadMagic)

func decodeInventory(data []byte) error {
	inv, err := splitInventory(data)
	if err != nil {
		return err
	}
	hasVersion := false
	if err := eachField(inv.entry, func(num protowire.Number, typ protowire.Type, _ []byte) {
		if num == 1 && typ == protowire.VarintType {
			hasVersion = true
		}
	}); err != nil {
		return err
	}
	if !hasVersion {
		return errors.New("entry without img_version")
	}
	return nil
}

// Get returns the current generation of a template.
func (s *Store) Get(ns, name string) (*Template, error) {
	if err := validRef(ns, name); err != nil {
		return nil, err
	}
	dir := s.nameDir(ns, name)
	target, err := os.Readlink(filepath.Join(dir, "current"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s/%s: %w", ns, name, ErrNotFound)
		}
		return nil, err
	}
	return s.load(filepath.Join(dir, target))
}

// CurrentGeneration is the generation Get would return, read without loading it.
func (s *Store) CurrentGeneration(ns, name string) (int64, error) {
	if err := validRef(ns, name); err != nil {
		return 0, err
	}
	target, err := os.Readlink(filepath.Join(s.nameDir(ns, name), "current"))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimPrefix(target, "g"), 10, 64)
}

func (s *Store) load(gdir string) (*Template, error) {
	data, err := os.ReadFile(filepath.Join(gdir, "meta.json"))
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", gdir, err)
	}
	var m Meta
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("template %s: meta.json: %w", gdir, err)
	}
	gen, err := strconv.ParseInt(strings.TrimPrefix(filepath.Base(gdir), "g"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("template %s: bad generation directory", gdir)
	}
	return &Template{Meta: m, Generation: gen, Dir: gdir, Images: filepath.Join(gdir, "images")}, nil
}

// Unreadable is a template whose current generation cannot be read (its meta.json
// missing or corrupt): it is not served, and Delete removes it.
type Unreadable struct {
	Name string
	Err  error
}

// Entry is a template as listed for operators: its description, or the error that keeps
// it from being read.
type Entry struct {
	Meta
	Error string `json:"error,omitempty"`
}

// Entries lists a namespace's templates for operators, unreadable ones among them, by
// name.
func (s *Store) Entries(ns string) ([]Entry, error) {
	ok, bad, err := s.ListAll(ns)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(ok)+len(bad))
	for _, t := range ok {
		out = append(out, Entry{Meta: t.Meta})
	}
	for _, b := range bad {
		out = append(out, Entry{Meta: Meta{Name: b.Name, Namespace: ns}, Error: b.Err.Error()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ListAll returns the current generation of every readable template of a namespace, and
// the templates that cannot be read, by name.
func (s *Store) ListAll(ns string) ([]*Template, []Unreadable, error) {
	if !validNamespace(ns) {
		return nil, nil, fmt.Errorf("namespace %q: not a containerd namespace", ns)
	}
	entries, err := os.ReadDir(filepath.Join(s.root, ns))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	var out []*Template
	var bad []Unreadable
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || !validName(e.Name()) {
			continue
		}
		t, err := s.Get(ns, e.Name())
		if errors.Is(err, fs.ErrNotExist) {
			// Its generation was being replaced (pruned) or the template deleted: read
			// "current" again.
			t, err = s.Get(ns, e.Name())
		}
		switch {
		case errors.Is(err, ErrNotFound):
			continue // not committed yet, or deleted
		case err != nil:
			bad = append(bad, Unreadable{Name: e.Name(), Err: err})
			continue
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, bad, nil
}

// Use marks a generation as used (a sandbox restored from it exists) until the
// returned release is called; a used generation is never removed. The mark holds across
// processes too (a shared flock on the generation directory): a pod's shim restoring a
// template keeps the pool shim's Delete from removing it.
func (s *Store) Use(t *Template) (release func()) {
	s.mu.Lock()
	s.inUse[t.Dir]++
	s.mu.Unlock()
	lock, _ := os.Open(t.Dir)
	if lock != nil {
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_SH); err != nil {
			lock.Close()
			lock = nil
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			if lock != nil {
				lock.Close() // drops the flock
			}
			s.mu.Lock()
			s.inUse[t.Dir]--
			if s.inUse[t.Dir] <= 0 {
				delete(s.inUse, t.Dir)
			}
			s.mu.Unlock()
			s.pruneOld(t.Namespace, t.Name)
		})
	}
}

// Acquire is Use for a generation that must still be on disk (a restore-on-create reads
// it): it fails, holding nothing, if the generation was removed before it was marked.
func (s *Store) Acquire(t *Template) (release func(), err error) {
	release = s.Use(t)
	// Marked (in this process and by the flock) it stays; was it still there?
	if _, err := os.Stat(filepath.Join(t.Images, "inventory.img")); err != nil {
		release()
		return nil, fmt.Errorf("template %s generation %d: %w", t.Name, t.Generation, err)
	}
	return release, nil
}

// Delete removes a template unless a sandbox uses one of its generations or one is
// being made.
func (s *Store) Delete(ns, name string) error {
	if err := validRef(ns, name); err != nil {
		return err
	}
	dir := s.nameDir(ns, name)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s/%s: %w", ns, name, ErrNotFound)
	}
	// The name's lock, then mu: the order pruneOld takes them in.
	unlockName, err := lockName(dir)
	if err != nil {
		return err
	}
	defer unlockName()
	s.mu.Lock()
	defer s.mu.Unlock()
	for d, n := range s.inUse {
		if n > 0 && filepath.Dir(d) == dir {
			return fmt.Errorf("%s/%s: %w by %d sandbox(es); drain its pool first", ns, name, ErrInUse, n)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "g") && !strings.HasPrefix(e.Name(), ".tmp-") {
			continue
		}
		unlock, ok := tryLock(filepath.Join(dir, e.Name()))
		if !ok {
			if strings.HasPrefix(e.Name(), ".tmp-") {
				return fmt.Errorf("%s/%s: %w: a new generation is being made", ns, name, ErrInUse)
			}
			return fmt.Errorf("%s/%s: %w by another shim (a restore from generation %s)", ns, name, ErrInUse, e.Name())
		}
		defer unlock()
	}
	return os.RemoveAll(dir)
}

// tryLock takes the exclusive flock of a generation directory if no process uses it.
func tryLock(gdir string) (unlock func(), ok bool) {
	f, err := os.Open(gdir)
	if err != nil {
		return func() {}, true // nothing there to protect
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return func() { f.Close() }, true
}

// pruneOld removes generations that are neither current nor in use, and leftovers of
// commits that never finished.
func (s *Store) pruneOld(ns, name string) {
	dir := s.nameDir(ns, name)
	// Under the name's lock no commit is between its rename and its "current" swap.
	unlockName, err := lockName(dir)
	if err != nil {
		return // the name is gone (deleted)
	}
	defer unlockName()
	cur, _ := os.Readlink(filepath.Join(dir, "current"))
	entries, _ := os.ReadDir(dir)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch {
		case e.Name() == "current" || e.Name() == cur || e.Name() == ".lock":
		case strings.HasPrefix(e.Name(), "g") && s.inUse[p] > 0:
		case strings.HasPrefix(e.Name(), ".current-"):
			os.Remove(p) // left by a commit that died between its symlink and its swap
		case strings.HasPrefix(e.Name(), ".tmp-") || strings.HasPrefix(e.Name(), "g"):
			// A commit in progress (its directory) or a restore (the generation, shared)
			// holds the flock; what no one holds is left over, or unused.
			if unlock, ok := tryLock(p); ok { // else another process restores from it
				os.RemoveAll(p)
				unlock()
			}
		}
	}
}

// Reader is who, besides root, opens a checkpoint's images at restore: in a container
// with a user namespace, CRIU's restored tasks open them as the container's root, whose
// host group ID this is.
type Reader struct{ GID uint32 }

// ReaderOf is the Reader of a checkpoint of a container with spec: the host group of its
// root when it has a user namespace that maps ID 0; nil (root alone) otherwise.
func ReaderOf(spec *specs.Spec) *Reader {
	if spec == nil || spec.Linux == nil {
		return nil
	}
	userns := false
	for _, ns := range spec.Linux.Namespaces {
		userns = userns || ns.Type == specs.UserNamespace
	}
	_, okU := hostOfRoot(spec.Linux.UIDMappings)
	gid, okG := hostOfRoot(spec.Linux.GIDMappings)
	if !userns || !okU || !okG {
		return nil
	}
	return &Reader{GID: gid}
}

// hostOfRoot is the host ID that ID 0 maps to.
func hostOfRoot(m []specs.LinuxIDMapping) (uint32, bool) {
	for _, x := range m {
		if x.ContainerID == 0 && x.Size > 0 {
			return x.HostID, true
		}
	}
	return 0, false
}

// SyncTree makes every file and directory under dir root-only and fsyncs it. With a
// reader, the directories below dir (the CRIU images, a pre-dump) and what they hold
// are readable by the reader's group too (0550, 0440; still root's, so that the group
// cannot change their modes), and dir is searchable by it (0710: a pre-dump is found
// through "../pre"); dir's ancestors, root-only, keep everyone else from reaching them
// by a path: CRIU opens the images as root and its restored tasks read them through
// that.
func SyncTree(dir string, reader *Reader) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		mode := os.FileMode(0o600)
		if d.IsDir() {
			mode = 0o700
		}
		// The shim's own (root's): an image unpacked from a tar may carry other owners.
		gid := os.Getegid()
		if rel, _ := filepath.Rel(dir, p); reader != nil && rel == "." {
			gid, mode = int(reader.GID), 0o710
		} else if reader != nil && (d.IsDir() || filepath.Dir(rel) != ".") {
			gid, mode = int(reader.GID), mode&0o500|(mode&0o500)>>3
		}
		if err := os.Lchown(p, os.Geteuid(), gid); err != nil {
			return err
		}
		if err := os.Chmod(p, mode); err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
