// Command nnp is the stand-in for the e2e nonewprivs image's program: installed setuid
// root, it prints the effective uid it runs with, which is 0 unless no_new_privs is set.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("Effective uid: %d\n", os.Geteuid())
}
