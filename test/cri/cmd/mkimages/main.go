// Command mkimages builds the stand-in images that critest v1.37.0 pulls and pushes them to
// a local registry (Debian's docker-registry on 127.0.0.1). Every image is made from Debian
// binaries found on this machine: Debian's dynamic busybox with its libc (applets as hard
// links, so that `sh -c ls` runs /bin/ls and not an in-process applet), small shell
// stand-ins for the tools busybox lacks, and two static helpers built from this module
// (pause and nnp).
//
// The registry keeps each reference's repository path (e2e-test-images/busybox,
// k8s-staging-cri-tools/test-image-tag, pause, ...); containerd's hosts.toml then sends
// registry.k8s.io, gcr.io and k8s.gcr.io to it.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	_ "crypto/sha256" // go-digest needs sha256 registered
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// entry is one file of a layer.
type entry struct {
	path     string // no leading slash
	mode     int64
	uid, gid int
	data     []byte
	src      string // host file to copy instead of data
	symlink  string
	hardlink string // path of an earlier entry in the same layer
	dir      bool
}

// image is one stand-in: the repository path and tags it is pushed under, its layers and
// its config.
type image struct {
	repo   string
	tags   []string
	layers [][]entry
	config ocispec.ImageConfig
}

// digestPinned lists the references critest uses that no locally built image can satisfy.
var digestPinned = []string{
	"gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf",
}

func main() {
	registry := flag.String("registry", "", "registry host:port (http) to push to")
	busybox := flag.String("busybox", "", "Debian's dynamic busybox binary (from the busybox .deb)")
	pause := flag.String("pause", "", "static pause binary (test/cri/cmd/pause)")
	nnp := flag.String("nnp", "", "static nonewprivs binary (test/cri/cmd/nnp)")
	goservice := flag.String("goservice", "", "optional: static sample Go service (test/apps/goservice), pushed as warm-test/goservice:1")
	flag.Parse()
	if *registry == "" || *busybox == "" || *pause == "" || *nnp == "" {
		flag.Usage()
		os.Exit(2)
	}
	images, err := standIns(*busybox, *pause, *nnp)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimages:", err)
		os.Exit(1)
	}
	if *goservice != "" {
		// The benchmark's pod application: the static service alone, printing ticks.
		images = append(images, image{repo: "warm-test/goservice", tags: []string{"1"},
			layers: [][]entry{{
				{path: "app", dir: true, mode: 0o755}, {path: "tmp", dir: true, mode: 0o1777},
				{path: "proc", dir: true, mode: 0o755}, {path: "sys", dir: true, mode: 0o755},
				{path: "dev", dir: true, mode: 0o755}, {path: "etc", dir: true, mode: 0o755},
				{path: "app/goservice", mode: 0o755, src: *goservice},
			}},
			config: ocispec.ImageConfig{Cmd: []string{"/app/goservice", "-ticks"}, Env: []string{pathEnv}}})
	}
	r := &pusher{base: "http://" + *registry, client: &http.Client{Timeout: time.Minute}}
	for _, img := range images {
		if err := r.push(img); err != nil {
			fmt.Fprintf(os.Stderr, "mkimages: push %s: %v\n", img.repo, err)
			os.Exit(1)
		}
		for _, t := range img.tags {
			fmt.Printf("pushed %s:%s\n", img.repo, t)
		}
	}
	for _, ref := range digestPinned {
		fmt.Printf("cannot reproduce (digest-pinned): %s\n", ref)
	}
}

// standIns describes every image critest v1.37.0 pulls (pkg/validate/consts.go,
// pkg/framework/util.go, security_context_linux.go, multi_container_linux.go).
func standIns(busybox, pause, nnp string) ([]image, error) {
	base, err := busyboxLayer(busybox)
	if err != nil {
		return nil, err
	}
	// A small top layer makes each reference a distinct image (so that removing one
	// in a spec never removes another), except where critest wants the same image.
	top := func(ref string, extra ...entry) []entry {
		return append([]entry{
			{path: "etc", dir: true, mode: 0o755},
			{path: "etc/passwd", mode: 0o644, data: []byte(passwd)},
			{path: "etc/group", mode: 0o644, data: []byte(group)},
			{path: "etc/image-ref", mode: 0o644, data: []byte(ref + "\n")},
		}, extra...)
	}
	sh := ocispec.ImageConfig{Cmd: []string{"sh"}, Env: []string{pathEnv}}
	withUser := func(u string) ocispec.ImageConfig { c := sh; c.User = u; return c }
	bb := func(repo, tag, ident string, cfg ocispec.ImageConfig, extra ...entry) image {
		return image{repo: repo, tags: []string{tag}, layers: [][]entry{base, top(ident, extra...)}, config: cfg}
	}
	const e2e = "e2e-test-images/"
	const cri = "k8s-staging-cri-tools/"
	imgs := []image{
		bb(e2e+"busybox", "1.29-2", "busybox", sh),
		bb(e2e+"nginx", "1.14-2", "nginx", ocispec.ImageConfig{
			// The argument puts "master process" in /proc/1/cmdline, which the PID
			// namespace specs look for; the script's comm is "nginx" for pidof.
			Cmd:          []string{"/usr/sbin/nginx", "nginx: master process nginx -g daemon off;"},
			Env:          []string{pathEnv},
			ExposedPorts: map[string]struct{}{"80/tcp": {}},
		}, webRoot("nginx"), entry{path: "usr/sbin/nginx", mode: 0o755, data: []byte(nginxScript)}),
		// hostnet-nginx-amd64 serves port 12003 in the host's network namespace (the
		// streaming spec port-forwards to it); here only on 127.0.0.1.
		bb(cri+"hostnet-nginx-amd64", "latest", "hostnet-nginx", ocispec.ImageConfig{
			Cmd: []string{"/usr/sbin/nginx", "nginx: master process nginx -g daemon off;"},
			Env: []string{pathEnv, "NGINX_LISTEN=127.0.0.1:12003"},
		}, webRoot("hostnet-nginx"), entry{path: "usr/sbin/nginx", mode: 0o755, data: []byte(nginxScript)}),
		bb(e2e+"httpd", "2.4.39-4", "httpd", ocispec.ImageConfig{
			Cmd:          []string{"httpd-foreground"},
			Env:          []string{pathEnv},
			ExposedPorts: map[string]struct{}{"80/tcp": {}},
		}, webRoot("httpd"), entry{path: "usr/local/bin", dir: true, mode: 0o755},
			entry{path: "usr/local/bin/httpd-foreground", mode: 0o755, data: []byte(httpdScript)}),
		bb(e2e+"nonewprivs", "1.3", "nonewprivs", ocispec.ImageConfig{
			Cmd: []string{"/usr/local/bin/nnp"}, Env: []string{pathEnv},
		}, entry{path: "usr/local/bin", dir: true, mode: 0o755},
			entry{path: "usr/local/bin/nnp", mode: 0o4755, src: nnp}),
		bb(cri+"test-image-latest", "latest", "test-image-latest", sh),
		bb(cri+"test-image-tag", "test", "test-image-tag:test", sh),
		bb(cri+"test-image-tag", "all", "test-image-tag:all", sh),
		bb(cri+"test-image-1", "latest", "test-image-1", sh),
		bb(cri+"test-image-2", "latest", "test-image-2", sh),
		bb(cri+"test-image-3", "latest", "test-image-3", sh),
		// One image under three tags.
		{repo: cri + "test-image-tags", tags: []string{"1", "2", "3"}, layers: [][]entry{base, top("test-image-tags")}, config: sh},
		bb(cri+"test-image-user-uid", "latest", "test-image-user-uid", withUser("1002")),
		bb(cri+"test-image-user-username", "latest", "test-image-user-username", withUser("www-data")),
		bb(cri+"test-image-user-uid-group", "latest", "test-image-user-uid-group", withUser("1003:1003")),
		bb(cri+"test-image-user-username-group", "latest", "test-image-user-username-group", withUser("www-data:www-data")),
		bb(cri+"test-image-predefined-group", "latest", "test-image-predefined-group", withUser("1000")),
	}
	// pause:3.9 (pulled from registry.k8s.io and k8s.gcr.io, the same repository here)
	// must differ from the sandbox image pause:3.10.2, which a spec must not remove.
	for _, tag := range []string{"3.9", "3.10.2"} {
		imgs = append(imgs, image{
			repo: "pause", tags: []string{tag},
			layers: [][]entry{{
				{path: "pause", mode: 0o755, src: pause},
				{path: "etc", dir: true, mode: 0o755},
				{path: "etc/image-ref", mode: 0o644, data: []byte("pause:" + tag + "\n")},
			}},
			config: ocispec.ImageConfig{Entrypoint: []string{"/pause"}, User: "65535:65535"},
		})
	}
	return imgs, nil
}

const pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

const passwd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
default-user:x:1000:1000:default-user:/home/default-user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
`

// group: default-user's supplementary group 50000 is what the SupplementalGroupsPolicy
// specs expect from test-image-predefined-group.
const group = `root:x:0:
daemon:x:1:
www-data:x:33:
users:x:100:
default-user:x:1000:
group-defined-in-image:x:50000:default-user
nogroup:x:65534:
`

func webRoot(name string) entry {
	return entry{path: "var/www/index.html", mode: 0o644, data: []byte("<html><body>" + name + " stand-in</body></html>\n")}
}

// nginxScript stands in for nginx: busybox httpd serves port 80, the script itself stays
// in the foreground (comm "nginx") and writes its pid where nginx does.
const nginxScript = `#!/bin/sh
mkdir -p /var/run
echo $$ > /var/run/nginx.pid
httpd -f -p "${NGINX_LISTEN:-80}" -h /var/www &
child=$!
trap 'kill $child 2>/dev/null; exit 0' TERM INT QUIT
echo "nginx stand-in: httpd listening on ${NGINX_LISTEN:-80}"
wait $child
`

// httpdScript stands in for Apache httpd; the multi-container spec looks for "httpd" in
// its log.
const httpdScript = `#!/bin/sh
httpd -f -p 80 -h /var/www &
child=$!
trap 'kill $child 2>/dev/null; exit 0' TERM INT QUIT
echo "httpd stand-in: AH00094: Command line: 'httpd -D FOREGROUND' (busybox httpd on :80)"
wait $child
`

// pgrep, pkill and ipcs are not in Debian's busybox; critest runs `pgrep sleep` and
// `ipcs -m`.
const pgrepScript = `#!/bin/sh
# pgrep stand-in: pgrep [-f] [-l] PATTERN (substring match on comm, or cmdline with -f)
full=0; long=0
while [ $# -gt 1 ]; do
	case "$1" in -f) full=1 ;; -l) long=1 ;; *) break ;; esac
	shift
done
pat=$1; rc=1
for d in /proc/[0-9]*; do
	pid=${d#/proc/}
	[ "$pid" = "$$" ] && continue
	comm=$(cat "$d/comm" 2>/dev/null) || continue
	[ "$comm" = pgrep ] && continue
	name=$comm
	[ $full = 1 ] && name=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null)
	case "$name" in
	*"$pat"*)
		if [ $long = 1 ]; then echo "$pid $comm"; else echo "$pid"; fi
		rc=0 ;;
	esac
done
exit $rc
`

const pkillScript = `#!/bin/sh
# pkill stand-in: pkill [-SIGNAL] [-f] PATTERN
sig=TERM; args=
for a in "$@"; do
	case "$a" in -f) args="-f" ;; -*) sig=${a#-} ;; *) pat=$a ;; esac
done
pids=$(pgrep $args "$pat") || exit 1
kill -s "$sig" $pids
`

const ipcsScript = `#!/bin/sh
# ipcs stand-in: shared memory segments from /proc/sysvipc/shm (ipcs -m).
echo
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch     status"
awk 'NR > 1 { printf "0x%08x %-10s %-10s %-10o %-10s %-10s\n", $1, $2, $8, $3, $4, $7 }' /proc/sysvipc/shm
`

// busyboxLayer is the shared base: busybox and every applet as a hard link to it, the C
// library it needs, stand-in tools and the usual directories.
func busyboxLayer(busybox string) ([]entry, error) {
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", busybox, err)
	}
	es := []entry{}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "usr/local", "usr/local/bin",
		"etc", "proc", "sys", "dev", "root", "home", "home/default-user", "var", "var/www", "var/run",
		"run", "mnt", "lib", "lib/x86_64-linux-gnu", "lib64"} {
		es = append(es, entry{path: d, dir: true, mode: 0o755})
	}
	for i := range es {
		switch es[i].path {
		case "root":
			es[i].mode = 0o700
		case "home/default-user":
			es[i].uid, es[i].gid = 1000, 1000
		}
	}
	es = append(es, entry{path: "tmp", dir: true, mode: 0o1777})
	es = append(es, entry{path: "bin/busybox", mode: 0o755, src: busybox})
	applets := strings.Fields(string(out))
	sort.Strings(applets)
	for _, a := range applets {
		if a == "bin/busybox" {
			continue
		}
		es = append(es, entry{path: a, hardlink: "bin/busybox"})
	}
	libs, err := sharedLibs(busybox)
	if err != nil {
		return nil, err
	}
	for _, l := range libs {
		dst := "lib/x86_64-linux-gnu/" + filepath.Base(l)
		if strings.HasPrefix(filepath.Base(l), "ld-linux") {
			dst = "lib64/" + filepath.Base(l)
		}
		es = append(es, entry{path: dst, mode: 0o755, src: l})
	}
	es = append(es,
		entry{path: "usr/bin/pgrep", mode: 0o755, data: []byte(pgrepScript)},
		entry{path: "usr/bin/pkill", mode: 0o755, data: []byte(pkillScript)},
		entry{path: "usr/bin/ipcs", mode: 0o755, data: []byte(ipcsScript)},
	)
	return es, nil
}

// sharedLibs lists the libraries ldd reports for bin (resolved to real files).
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		var p string
		switch {
		case len(f) >= 3 && f[1] == "=>":
			p = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			p = f[0]
		default:
			continue
		}
		libs = append(libs, p)
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s: no libraries (is it the static busybox?)", bin)
	}
	return libs, nil
}

// layer writes entries as a gzip'd tar; it returns the blob and the uncompressed digest.
func layer(es []entry) ([]byte, digest.Digest, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	mtime := time.Unix(0, 0)
	for _, e := range es {
		h := &tar.Header{Name: e.path, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: mtime, Format: tar.FormatPAX}
		var data []byte
		switch {
		case e.dir:
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		case e.symlink != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.symlink, 0o777
		case e.hardlink != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeLink, e.hardlink, 0o755
		default:
			h.Typeflag = tar.TypeReg
			data = e.data
			if e.src != "" {
				var err error
				if data, err = os.ReadFile(e.src); err != nil {
					return nil, "", err
				}
			}
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, "", err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	diffID := digest.FromBytes(raw.Bytes())
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return z.Bytes(), diffID, nil
}

// pusher speaks the parts of the OCI distribution API that a push needs.
type pusher struct {
	base   string
	client *http.Client
}

func (p *pusher) push(img image) error {
	var descs []ocispec.Descriptor
	var diffIDs []digest.Digest
	for _, es := range img.layers {
		blob, diffID, err := layer(es)
		if err != nil {
			return err
		}
		d := descriptor(ocispec.MediaTypeImageLayerGzip, blob)
		if err := p.blob(img.repo, d, blob); err != nil {
			return err
		}
		descs = append(descs, d)
		diffIDs = append(diffIDs, diffID)
	}
	epoch := time.Unix(0, 0).UTC()
	cfg, err := json.Marshal(ocispec.Image{
		Created:  &epoch,
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config:   img.config,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		return err
	}
	cfgDesc := descriptor(ocispec.MediaTypeImageConfig, cfg)
	if err := p.blob(img.repo, cfgDesc, cfg); err != nil {
		return err
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfgDesc, Layers: descs}
	m.SchemaVersion = 2
	man, err := json.Marshal(m)
	if err != nil {
		return err
	}
	for _, tag := range img.tags {
		req, _ := http.NewRequest(http.MethodPut, p.base+"/v2/"+img.repo+"/manifests/"+tag, bytes.NewReader(man))
		req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
		if err := p.do(req, http.StatusCreated); err != nil {
			return fmt.Errorf("manifest %s: %w", tag, err)
		}
	}
	return nil
}

func descriptor(mt string, b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// blob uploads b in one request unless the registry has it already.
func (p *pusher) blob(repo string, d ocispec.Descriptor, b []byte) error {
	head, _ := http.NewRequest(http.MethodHead, p.base+"/v2/"+repo+"/blobs/"+d.Digest.String(), nil)
	if p.do(head, http.StatusOK) == nil {
		return nil
	}
	post, _ := http.NewRequest(http.MethodPost, p.base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := p.client.Do(post)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("start upload: %s", resp.Status)
	}
	loc, err := resp.Location()
	if err != nil {
		return err
	}
	q := loc.Query()
	q.Set("digest", d.Digest.String())
	loc.RawQuery = q.Encode()
	put, _ := http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(b))
	put.Header.Set("Content-Type", "application/octet-stream")
	put.ContentLength = int64(len(b))
	if err := p.do(put, http.StatusCreated); err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	return nil
}

func (p *pusher) do(req *http.Request, want int) error {
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
