//go:build !amd64

package hwbreak

// Probe knows only x86's debug registers.
func Probe() (bool, error) { return false, ErrUnsupported }
