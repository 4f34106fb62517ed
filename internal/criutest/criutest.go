// Package criutest writes minimal CRIU image sets for unit tests: an inventory that
// go-criu's image tools decode, and runc's descriptors.json.
package criutest

import (
	"os"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/inventory"
	"google.golang.org/protobuf/proto"
)

// WriteImages writes a decodable inventory.img and a descriptors.json into dir.
func WriteImages(dir string) error {
	f, err := os.Create(filepath.Join(dir, "inventory.img"))
	if err != nil {
		return err
	}
	img := &crit.CriuImage{Magic: "INVENTORY", Entries: []*crit.CriuEntry{{Message: &inventory.InventoryEntry{ImgVersion: proto.Uint32(2)}}}}
	if err := crit.New(nil, f, "", false, false).Encode(img); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "descriptors.json"), []byte(`["pipe:[1]","pipe:[2]","pipe:[3]"]`), 0o600)
}
