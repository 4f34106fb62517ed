package ident

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for _, s := range []string{"a", "py", "a.b-c_d", "X1", "9", strings.Repeat("a", 63)} {
		if !Valid(s, 63) {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"", ".", "..", "-a", ".a", "_a", "a/b", "a b", "a\x00", strings.Repeat("a", 64), "é"} {
		if Valid(s, 63) {
			t.Errorf("%q accepted", s)
		}
	}
}
