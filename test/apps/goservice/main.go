// Command goservice is warm's sample Go service: its initialisation takes about a second
// and 200 MB (a table it computes), after which it answers each line on stdin with one
// line on stdout that depends on the table, and writes /tmp/ready. With -ticks it prints
// a line every 5 ms instead (for a pod, whose container has no stdin to answer).
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"
)

const tableBytes = 200 << 20

func main() {
	ticks := flag.Bool("ticks", false, "after initialisation, print a line every 5 ms")
	flag.Parse()
	start := time.Now()
	// 200 MB of pseudo-random data: no page is zero or the same as another (a restored
	// copy must really hold it, and KSM finds nothing to merge inside one process, as in
	// an application's own data), then hashing until about a second of CPU is spent.
	table := make([]byte, tableBytes)
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(time.Now().UnixNano()))
	_, _ = rand.NewChaCha8(seed).Read(table)
	h := sha256.Sum256(table[:64])
	for time.Since(start) < time.Second {
		h = sha256.Sum256(h[:])
	}
	id := fmt.Sprintf("%x", h[:6])
	if f, err := os.Create("/tmp/ready"); err == nil {
		f.Close()
	}
	fmt.Printf("ready after %v\n", time.Since(start).Round(time.Millisecond))
	for n := 0; *ticks; n++ {
		fmt.Printf("tick %d state=%s sum=%d\n", n, id, table[(n<<20)%tableBytes])
		time.Sleep(5 * time.Millisecond)
	}
	sc := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	for sc.Scan() {
		line := sc.Text()
		sum := 0
		for i := 0; i < len(line); i++ {
			sum += int(table[(int(line[i])<<20)%tableBytes])
		}
		fmt.Fprintf(out, "reply %s state=%s sum=%d\n", line, id, sum)
		out.Flush()
	}
}
