// Package pagecache keeps a template's memory images in the page cache as single pages,
// so that the CRIU restores of a pool's refills can be preempted.
//
// CRIU restores a task's memory with preadv calls on its pages image, one call for a
// run of pages (the whole 200 MB heap of the sample Go service in one call). The
// kernel copies a read in batches of page-cache folios and offers to reschedule only
// between batches. ext4 (Linux 6.16 and later) and other file systems cache a file in
// large folios, up to 2 MB each when the file was read sequentially with a large
// readahead (read_ahead_kb 8192 here): a batch is then up to 31 folios, about 60 MB.
// On a kernel built without full preemption (PREEMPT_NONE, PREEMPT_VOLUNTARY: the
// usual server and VM kernels) the restore holds its CPU for tens of milliseconds at a
// time, whatever its nice value, and every task queued there waits: containerd, the
// shim serving a hit, the node's own workloads. Traced on a 2-core VM (kernel 6.18,
// preempt=none) during `ctr run` pool hits of the sample Go service, each meeting a
// refill: stretches of 25 to 72 ms inside preadv, and containerd's and the shims'
// wake-ups waited over 4 ms 1118 times in 25 hits (p99 11.8 ms); with the image kept in
// single pages by a Keeper, 284 times (p99 3.1 ms). A batch of single pages is 124 KB.
//
// Prime puts a file in the page cache that way: it drops the file's cached pages and
// reads it back with readahead off (POSIX_FADV_RANDOM on its own descriptor), which
// caches each page in a folio of its own. Keeper primes a template's images once, and
// before each later restore reads back, the same way, the pages it finds evicted since
// (CRIU's own read of them would cache them in large folios again).
package pagecache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MinSize is the smallest image Keeper primes: a smaller one is copied in a batch or two
// of whatever folios it is cached in.
const MinSize = 4 << 20

// Prime drops path's cached pages and reads the file back with readahead off, so that
// each page is cached in a folio of its own. Pages another process has mapped, or not
// yet written back, stay as they were cached.
func Prime(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	// Dirty pages are not dropped: write them first (a committed template's are already).
	if err := unix.Fdatasync(fd); err != nil {
		return fmt.Errorf("prime %s: fdatasync: %w", path, err)
	}
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("prime %s: drop cached pages: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("prime %s: %w", path, err)
	}
	return fill(f, path, []Span{{Off: 0, Len: fi.Size()}})
}

// Resident reports whether every page of path is in the page cache.
func Resident(path string) (bool, error) {
	missing, err := Missing(path)
	return len(missing) == 0, err
}

// Span is a run of a file's pages, in bytes.
type Span struct{ Off, Len int64 }

// Missing returns the runs of path's pages that are not in the page cache.
func Missing(path string) ([]Span, error) {
	m, err := mapFile(path)
	if err != nil || m == nil {
		return nil, err
	}
	defer unix.Munmap(m)
	page := int64(os.Getpagesize())
	vec := make([]byte, (int64(len(m))+page-1)/page)
	if err := mincore(m, vec); err != nil {
		return nil, fmt.Errorf("mincore %s: %w", path, err)
	}
	var spans []Span
	for i, v := range vec {
		if v&1 != 0 {
			continue
		}
		off := int64(i) * page
		if n := len(spans); n > 0 && spans[n-1].Off+spans[n-1].Len == off {
			spans[n-1].Len += page
			continue
		}
		spans = append(spans, Span{Off: off, Len: page})
	}
	return spans, nil
}

// Fill reads the spans of path into the page cache with readahead off: each page in a
// folio of its own, and the pages already cached left as they are.
func Fill(path string, spans []Span) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return fill(f, path, spans)
}

// fill reads the spans of f (path) with readahead off on f.
func fill(f *os.File, path string, spans []Span) error {
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
		return fmt.Errorf("fill %s: readahead off: %w", path, err)
	}
	buf := make([]byte, 1<<20)
	for _, sp := range spans {
		for off := sp.Off; off < sp.Off+sp.Len; {
			n := min(int64(len(buf)), sp.Off+sp.Len-off)
			got, err := f.ReadAt(buf[:n], off)
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("fill %s: %w", path, err)
			}
			if got == 0 {
				break // the file is shorter now
			}
			off += int64(got)
		}
	}
	return nil
}

// Keeper keeps the pages images of template image directories primed. Its methods may
// be called concurrently: the restores of one pool run in parallel.
type Keeper struct {
	mu     sync.Mutex
	primed map[fileKey]bool // images primed (by identity, so a new generation's are new); guarded by mu
	failed map[fileKey]bool // images whose prime failed: not tried again; guarded by mu
	prime  func(path string) error
}

// fileKey identifies one image file: a template generation's images are never
// rewritten in place.
type fileKey struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

// NewKeeper returns a Keeper that has primed nothing yet.
func NewKeeper() *Keeper {
	return &Keeper{primed: map[fileKey]bool{}, failed: map[fileKey]bool{}, prime: Prime}
}

// Keep primes each pages image of dir (CRIU's pages-N.img of MinSize or more) that it
// has not primed yet, and reads back (Fill) the pages evicted since from one it has
// primed. It returns how many images it primed and how many it filled, and the first
// error (the others are still tried). An image whose prime or fill failed is not tried
// again (its error is returned once): the restore reads it as it is cached.
func (k *Keeper) Keep(dir string) (primed, filled int, err error) {
	names, err := filepath.Glob(filepath.Join(dir, "pages-*.img"))
	if err != nil {
		return 0, 0, err
	}
	k.mu.Lock() // one prime at a time: two restores of a pool need the same images
	defer k.mu.Unlock()
	for _, name := range names {
		did, kerr := k.keepLocked(name)
		switch did {
		case didPrime:
			primed++
		case didFill:
			filled++
		}
		if kerr != nil && err == nil {
			err = kerr
		}
	}
	return primed, filled, err
}

// What keepLocked did to an image.
const (
	didNothing = iota
	didPrime
	didFill
)

func (k *Keeper) keepLocked(name string) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(name, &st); err != nil {
		return didNothing, fmt.Errorf("image %s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size < MinSize {
		return didNothing, nil
	}
	key := fileKey{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano()}
	if k.failed[key] {
		return didNothing, nil
	}
	if k.primed[key] {
		// Pages evicted since (a few at a time, seen here): read back just those, as
		// single pages, before CRIU reads them with readahead.
		missing, err := Missing(name)
		if err != nil {
			k.failed[key] = true
			return didNothing, err
		}
		if len(missing) == 0 {
			return didNothing, nil
		}
		if err := Fill(name, missing); err != nil {
			k.failed[key] = true
			return didNothing, err
		}
		return didFill, nil
	}
	if err := k.prime(name); err != nil {
		k.failed[key] = true
		return didNothing, err
	}
	k.primed[key] = true
	return didPrime, nil
}

// mapFile maps path read-only and shared (its page cache); nil for an empty file. The
// caller unmaps it.
func mapFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return nil, err
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", path, err)
	}
	return m, nil
}

// mincore fills vec with the residency of m's pages (bit 0 set: in memory).
func mincore(m, vec []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// LargeFolioPages counts the pages of path that the page cache holds in folios of more
// than one page. It maps the file and reads /proc/self/pagemap and /proc/kpageflags,
// which need root (CAP_SYS_ADMIN); a page not cached is read, in a folio of its own, to
// be counted.
func LargeFolioPages(path string) (int, error) {
	large, err := LargeFolios(path)
	n := 0
	for _, l := range large {
		if l {
			n++
		}
	}
	return n, err
}

// LargeFolios says, for each page of path, whether the page cache holds it in a folio
// of more than one page (see LargeFolioPages).
func LargeFolios(path string) ([]bool, error) {
	m, err := mapFile(path)
	if err != nil || m == nil {
		return nil, err
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	// Map each page (pagemap shows only mapped pages), with fault readahead off: a page
	// evicted meanwhile is read back in a folio of its own, not in a large one.
	if err := unix.Madvise(m, unix.MADV_RANDOM); err != nil {
		return nil, fmt.Errorf("madvise %s: %w", path, err)
	}
	var sum byte
	for i := 0; i < len(m); i += page {
		sum += m[i]
	}
	runtime.KeepAlive(sum)
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil, err
	}
	defer pm.Close()
	kf, err := os.Open("/proc/kpageflags")
	if err != nil {
		return nil, err
	}
	defer kf.Close()
	base := uint64(uintptr(unsafe.Pointer(&m[0]))) / uint64(page)
	entry := make([]byte, 8)
	n := (len(m) + page - 1) / page
	large := make([]bool, 0, n)
	for i := 0; i < n; i++ {
		if _, err := pm.ReadAt(entry, int64((base+uint64(i))*8)); err != nil {
			return nil, fmt.Errorf("pagemap: %w", err)
		}
		e := binary.LittleEndian.Uint64(entry)
		pfn := e & (1<<55 - 1)
		if e>>63 == 0 || pfn == 0 {
			return nil, errors.New("pagemap shows no page frame (not root?)")
		}
		if _, err := kf.ReadAt(entry, int64(pfn*8)); err != nil {
			return nil, fmt.Errorf("kpageflags: %w", err)
		}
		const compoundHead, compoundTail = 1 << 15, 1 << 16
		large = append(large, binary.LittleEndian.Uint64(entry)&(compoundHead|compoundTail) != 0)
	}
	return large, nil
}
