// Package ident checks the names warm turns into paths or socket keys: template names,
// containerd namespaces and group names.
package ident

// Valid reports whether s is 1 to max letters, digits, '.', '_' or '-', starting with a
// letter or digit: never "", "." or "..", never a path. (A regexp costs every shim
// start about 1 ms to compile.)
func Valid(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}
