package store

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// Inventories CRIU 4.1.1 wrote for the same container dumped with network-lock iptables
// and skip (they differ in the lock and in the dump's uuid).
const (
	inventoryIptables = "163131584e000000080210011a18080110011801200128013002380340044806500758086005200128013000580062006a2436306332376262372d386331312d343238322d613530612d323532333162323636326237"
	inventorySkip     = "163131584e000000080210011a18080110011801200128013002380340044806500758086005200128013000580262006a2462303834313964662d386566612d343038342d623730302d343838666330613034623765"
)

func writeInventory(t *testing.T, hexData string) string {
	t.Helper()
	data, err := hex.DecodeString(hexData)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "inventory.img"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestNetworkLockReadsCRIUsInventories(t *testing.T) {
	for _, c := range []struct{ hex, want string }{{inventoryIptables, "iptables"}, {inventorySkip, "skip"}} {
		got, err := NetworkLock(writeInventory(t, c.hex))
		if err != nil || got != c.want {
			t.Errorf("NetworkLock = %q, %v; want %q", got, err, c.want)
		}
	}
}

func TestSetNetworkLock(t *testing.T) {
	dir := writeInventory(t, inventoryIptables)
	before, _ := os.ReadFile(filepath.Join(dir, "inventory.img"))
	changed, err := SetNetworkLock(dir, "skip")
	if err != nil || !changed {
		t.Fatalf("SetNetworkLock = %v, %v", changed, err)
	}
	if got, err := NetworkLock(dir); err != nil || got != "skip" {
		t.Fatalf("after: %q, %v", got, err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "inventory.img"))
	if err := decodeInventory(after); err != nil {
		t.Fatalf("rewritten inventory does not decode: %v", err)
	}
	// Every other field is kept, in order; only the lock moved to the end.
	fields := func(data []byte) map[protowire.Number]string {
		inv, err := splitInventory(data)
		if err != nil {
			t.Fatal(err)
		}
		m := map[protowire.Number]string{}
		_ = eachField(inv.entry, func(num protowire.Number, _ protowire.Type, f []byte) { m[num] += hex.EncodeToString(f) })
		return m
	}
	b, a := fields(before), fields(after)
	if len(a) != len(b) {
		t.Fatalf("fields %d, were %d", len(a), len(b))
	}
	for num, f := range b {
		if num != inventoryNetworkLock && a[num] != f {
			t.Errorf("field %d changed: %s -> %s", num, f, a[num])
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".inventory.img-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	// Already so: nothing written.
	if changed, err := SetNetworkLock(dir, "skip"); err != nil || changed {
		t.Fatalf("second SetNetworkLock = %v, %v", changed, err)
	}
	if _, err := SetNetworkLock(dir, "none"); err == nil {
		t.Fatal("unknown method accepted")
	}
}

// An inventory without the field (CRIU before 3.16) reads as iptables and gets the field.
func TestSetNetworkLockAddsTheField(t *testing.T) {
	data, _ := hex.DecodeString(inventoryIptables)
	inv, err := splitInventory(data)
	if err != nil {
		t.Fatal(err)
	}
	var entry []byte
	_ = eachField(inv.entry, func(num protowire.Number, _ protowire.Type, f []byte) {
		if num != inventoryNetworkLock {
			entry = append(entry, f...)
		}
	})
	old := append(append([]byte(nil), inv.header...), byte(len(entry)), 0, 0, 0)
	old = append(old, entry...)
	dir := writeInventory(t, hex.EncodeToString(old))
	if got, err := NetworkLock(dir); err != nil || got != "iptables" {
		t.Fatalf("NetworkLock = %q, %v; want iptables", got, err)
	}
	if changed, err := SetNetworkLock(dir, "nftables"); err != nil || !changed {
		t.Fatalf("SetNetworkLock = %v, %v", changed, err)
	}
	if got, err := NetworkLock(dir); err != nil || got != "nftables" {
		t.Fatalf("after: %q, %v", got, err)
	}
}

func TestSetNetworkLockRefusesWhatIsNoInventory(t *testing.T) {
	dir := writeInventory(t, "00112233445566778899")
	if _, err := SetNetworkLock(dir, "skip"); err == nil {
		t.Fatal("a file without CRIU's magic was rewritten")
	}
}
