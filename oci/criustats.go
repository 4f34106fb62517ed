package oci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// CRIU image magics of the stats file (criu/include/magic.h).
const (
	imgServiceMagic = 0x55105940
	statsMagic      = 0x57093306
)

// DumpStats is what CRIU reports of one dump (its stats-dump file in the work
// directory): how long freezing the tasks took and how long they then stayed frozen,
// which together are the pause the application sees.
type DumpStats struct {
	Freezing time.Duration // from the freeze request until every task was frozen
	Frozen   time.Duration // from then until the tasks were resumed (or killed)
	MemDump  time.Duration
	MemWrite time.Duration
	Pages    uint64 // pages written
}

// Pause is the longest a task of the dump was stopped.
func (s DumpStats) Pause() time.Duration { return s.Freezing + s.Frozen }

// ReadDumpStats reads stats-dump from a CRIU work directory.
func ReadDumpStats(workDir string) (DumpStats, error) {
	var st DumpStats
	data, err := os.ReadFile(filepath.Join(workDir, "stats-dump"))
	if err != nil {
		return st, err
	}
	if len(data) < 12 || binary.LittleEndian.Uint32(data) != imgServiceMagic || binary.LittleEndian.Uint32(data[4:]) != statsMagic {
		return st, errors.New("stats-dump: not a CRIU stats image")
	}
	n := int(binary.LittleEndian.Uint32(data[8:]))
	msg := data[12:]
	if n > len(msg) {
		return st, errors.New("stats-dump: truncated")
	}
	// stats_entry { optional dump_stats_entry dump = 1; ... }
	dump, err := field(msg[:n], 1)
	if err != nil {
		return st, fmt.Errorf("stats-dump: %w", err)
	}
	us := func(num protowire.Number) time.Duration {
		v, _ := varint(dump, num)
		return time.Duration(v) * time.Microsecond
	}
	st.Freezing, st.Frozen, st.MemDump, st.MemWrite = us(1), us(2), us(3), us(4)
	st.Pages, _ = varint(dump, 7)
	return st, nil
}

// field returns the bytes of the first length-delimited field num of msg.
func field(msg []byte, num protowire.Number) ([]byte, error) {
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		msg = msg[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(msg)
			if l < 0 {
				return nil, protowire.ParseError(l)
			}
			return v, nil
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		msg = msg[l:]
	}
	return nil, fmt.Errorf("field %d missing", num)
}

// varint returns the varint field num of msg.
func varint(msg []byte, num protowire.Number) (uint64, bool) {
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return 0, false
		}
		msg = msg[l:]
		if n == num && typ == protowire.VarintType {
			v, l := protowire.ConsumeVarint(msg)
			return v, l >= 0
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return 0, false
		}
		msg = msg[l:]
	}
	return 0, false
}
