// Command warm-runc is the runc of containers that warm serves from a pool: a small
// binary (it runs twice on every hit) that lets the shim adopt and thaw a frozen
// sandbox, and passes everything else to the real runc. See package oci/wrap.
package main

import (
	"os"

	"github.com/warmshim/warm/oci/wrap"
)

func main() {
	os.Exit(wrap.Main(os.Args))
}
