package harness

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// File is one entry of an image layer.
type File struct {
	Path     string // inside the image, no leading slash
	Mode     int64
	Data     []byte
	Src      string // host file to copy, instead of Data
	Linkname string // symlink target
	Dir      bool
}

// BusyboxFiles returns a root filesystem of Debian's busybox-static with a link for
// every applet, a passwd and group file, and the usual empty directories.
func BusyboxFiles() ([]File, error) {
	bb := "/bin/busybox"
	if p := os.Getenv("WARM_BUSYBOX"); p != "" { // a host without busybox-static (the device check)
		bb = p
	}
	out, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list-full (install busybox-static): %w", err)
	}
	files := []File{
		{Path: "bin", Dir: true, Mode: 0o755}, {Path: "sbin", Dir: true, Mode: 0o755},
		{Path: "usr", Dir: true, Mode: 0o755}, {Path: "usr/bin", Dir: true, Mode: 0o755},
		{Path: "usr/sbin", Dir: true, Mode: 0o755}, {Path: "etc", Dir: true, Mode: 0o755},
		{Path: "tmp", Dir: true, Mode: 0o1777}, {Path: "proc", Dir: true, Mode: 0o755},
		{Path: "sys", Dir: true, Mode: 0o755}, {Path: "dev", Dir: true, Mode: 0o755},
		{Path: "root", Dir: true, Mode: 0o700}, {Path: "var", Dir: true, Mode: 0o755},
		{Path: "var/www", Dir: true, Mode: 0o755},
		{Path: "bin/busybox", Src: bb, Mode: 0o755},
		{Path: "etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")},
		{Path: "etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		{Path: "var/www/index.html", Mode: 0o644, Data: []byte("hello from warm\n")},
	}
	for _, l := range strings.Fields(string(out)) {
		if l == "bin/busybox" {
			continue
		}
		files = append(files, File{Path: l, Linkname: "/bin/busybox"})
	}
	return files, nil
}

// ImportImage builds a one-layer OCI image from files, imports it as name and unpacks it
// for the default snapshotter.
func ImportImage(ctx context.Context, client *containerd.Client, name string, files []File, cfg ocispec.ImageConfig) error {
	layer, diffID, err := buildLayer(files)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	img := ocispec.Image{
		Created:  &now,
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config:   cfg,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	}
	cfgJSON, _ := json.Marshal(img)
	layerDesc := blobDesc(ocispec.MediaTypeImageLayerGzip, layer)
	cfgDesc := blobDesc(ocispec.MediaTypeImageConfig, cfgJSON)
	manifest := ocispec.Manifest{Config: cfgDesc, Layers: []ocispec.Descriptor{layerDesc}, MediaType: ocispec.MediaTypeImageManifest}
	manifest.SchemaVersion = 2
	manJSON, _ := json.Marshal(manifest)
	manDesc := blobDesc(ocispec.MediaTypeImageManifest, manJSON)
	manDesc.Annotations = map[string]string{ocispec.AnnotationRefName: name, "io.containerd.image.name": name}
	manDesc.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	index := ocispec.Index{Manifests: []ocispec.Descriptor{manDesc}, MediaType: ocispec.MediaTypeImageIndex}
	index.SchemaVersion = 2
	idxJSON, _ := json.Marshal(index)

	// An OCI layout tar, which ctr and the client both import.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		_, _ = tw.Write(data)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", idxJSON)
	for _, b := range [][]byte{layer, cfgJSON, manJSON} {
		add("blobs/sha256/"+digest.FromBytes(b).Encoded(), b)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	imgs, err := client.Import(ctx, &buf, containerd.WithImageRefTranslator(func(string) string { return name }))
	if err != nil {
		return fmt.Errorf("import %s: %w", name, err)
	}
	if len(imgs) == 0 {
		return fmt.Errorf("import %s: no image", name)
	}
	image, err := client.GetImage(ctx, name)
	if err != nil {
		return err
	}
	return image.Unpack(ctx, "")
}

func blobDesc(mt string, b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

func buildLayer(files []File) (gz []byte, diffID digest.Digest, _ error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	mtime := time.Unix(0, 0)
	for _, f := range files {
		h := &tar.Header{Name: f.Path, Mode: f.Mode, ModTime: mtime}
		var data []byte
		switch {
		case f.Dir:
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		case f.Linkname != "":
			h.Typeflag = tar.TypeSymlink
			h.Linkname = f.Linkname
			h.Mode = 0o777
		default:
			h.Typeflag = tar.TypeReg
			data = f.Data
			if f.Src != "" {
				var err error
				if data, err = os.ReadFile(f.Src); err != nil {
					return nil, "", err
				}
			}
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, "", err
		}
		if len(data) > 0 {
			if _, err := tw.Write(data); err != nil {
				return nil, "", err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(raw.Bytes())
	diffID = digest.NewDigestFromBytes(digest.SHA256, sum[:])
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
