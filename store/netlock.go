package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/warmshim/warm/internal/atomicfile"
)

// inventoryNetworkLock is the field of CRIU's inventory entry that records how the dump
// locked the network (network_lock_method), and networkLockCodes its values. CRIU
// restores the images with that method whatever it is told (since CRIU 3.16; without
// the field, iptables).
const inventoryNetworkLock protowire.Number = 11

var networkLockCodes = map[string]uint64{"iptables": 0, "nftables": 1, "skip": 2}

// NetworkLock returns the network lock method a CRIU image set records ("iptables"
// when it records none, as CRIU reads it).
func NetworkLock(images string) (string, error) {
	_, inv, err := readInventory(images)
	if err != nil {
		return "", err
	}
	return inv.networkLock()
}

// SetNetworkLock makes a CRIU image set record method as its network lock, so that CRIU
// restores it so: a template's checkpoint image made by containerd records CRIU's
// default (iptables), which costs each restore of a pool's sandbox (a namespace of its
// own, which nothing can reach before its adoption) about 50 ms. The inventory is
// replaced whole (a temporary file renamed over it). It reports whether it changed.
func SetNetworkLock(images, method string) (bool, error) {
	code, ok := networkLockCodes[method]
	if !ok {
		return false, fmt.Errorf("unknown CRIU network lock method %q", method)
	}
	path, inv, err := readInventory(images)
	if err != nil {
		return false, err
	}
	if cur, err := inv.networkLock(); err != nil {
		return false, err
	} else if cur == method {
		return false, nil
	}
	var entry []byte
	_ = eachField(inv.entry, func(num protowire.Number, _ protowire.Type, field []byte) { // parsed by networkLock
		if num != inventoryNetworkLock {
			entry = append(entry, field...)
		}
	})
	entry = protowire.AppendTag(entry, inventoryNetworkLock, protowire.VarintType)
	entry = protowire.AppendVarint(entry, code)
	out := append([]byte(nil), inv.header...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(entry)))
	out = append(append(out, entry...), inv.rest...)
	if err := atomicfile.Write(path, out); err != nil {
		return false, fmt.Errorf("inventory.img: %w", err)
	}
	return true, nil
}

// readInventory reads and cuts the inventory of a CRIU image set, and returns its path.
func readInventory(images string) (string, inventory, error) {
	path := filepath.Join(images, "inventory.img")
	data, err := readAtMost(path, 64<<10) // CRIU writes about 100 bytes
	if err != nil {
		return path, inventory{}, err
	}
	inv, err := splitInventory(data)
	if err != nil {
		return path, inventory{}, fmt.Errorf("inventory.img: %w", err)
	}
	return path, inv, nil
}

// networkLock is the method the inventory records.
func (inv inventory) networkLock() (string, error) {
	code, ok := uint64(0), false
	err := eachField(inv.entry, func(num protowire.Number, typ protowire.Type, field []byte) {
		if num == inventoryNetworkLock && typ == protowire.VarintType {
			code, _ = protowire.ConsumeVarint(field[protowire.SizeTag(num):])
			ok = true
		}
	})
	if err != nil {
		return "", fmt.Errorf("inventory.img: %w", err)
	}
	if !ok {
		return "iptables", nil
	}
	for m, c := range networkLockCodes {
		if c == code {
			return m, nil
		}
	}
	return "", fmt.Errorf("inventory.img: unknown network lock method %d", code)
}

// inventory is an inventory image cut at its entry: the magic words before the entry's
// size, the entry, and whatever follows it.
type inventory struct {
	header, entry, rest []byte
}

// splitInventory checks the magic words of an inventory image and cuts it at its entry.
func splitInventory(data []byte) (inventory, error) {
	word := func(off int) (uint64, bool) {
		if off+4 > len(data) {
			return 0, false
		}
		return uint64(binary.LittleEndian.Uint32(data[off:])), true
	}
	off := 0
	m, ok := word(off)
	if ok && (m == criuMagic().ByName["IMG_COMMON"] || m == criuMagic().ByName["IMG_SERVICE"]) {
		off += 4
		m, ok = word(off)
	}
	if !ok || criuMagic().ByValue[m] != "INVENTORY" {
		return inventory{}, errors.New("not an inventory image (bad magic)")
	}
	off += 4
	size, ok := word(off)
	if !ok || size == 0 || off+4+int(size) > len(data) {
		return inventory{}, errors.New("truncated entry")
	}
	end := off + 4 + int(size)
	return inventory{header: data[:off], entry: data[off+4 : end], rest: data[end:]}, nil
}

// eachField calls f with each field of a protobuf message, its tag included.
func eachField(msg []byte, f func(num protowire.Number, typ protowire.Type, field []byte)) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return errors.New("corrupt entry")
		}
		m := protowire.ConsumeFieldValue(num, typ, msg[n:])
		if m < 0 {
			return errors.New("corrupt entry")
		}
		f(num, typ, msg[:n+m])
		msg = msg[n+m:]
	}
	return nil
}
