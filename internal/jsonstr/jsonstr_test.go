package jsonstr

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestAppend(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{`q"b\`, `"q\"b\\"`},
		{"a\nb\rc\td", `"a\nb\rc\td"`},
		{"\x00\x1f\x7f", `"\u0000\u001f\u007f"`},
		{"héllo €", `"héllo €"`},
		{"bad\xffutf8", `"bad\ufffdutf8"`},
	} {
		if got := string(Append(nil, c.in)); got != c.want {
			t.Errorf("Append(%q) = %s, want %s", c.in, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = Append(make([]byte, 0, 64)[:0], "no \"allocation\" here") }); n > 1 {
		t.Errorf("Append allocates %v times beyond its buffer", n-1)
	}
}

// FuzzAppend: the output is valid JSON that decodes to s, with each byte
// of invalid UTF-8 replaced by U+FFFD.
func FuzzAppend(f *testing.F) {
	f.Add("a\"b\\c\n\x00\x7f\xff€")
	f.Fuzz(func(t *testing.T, s string) {
		b := Append(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("Append(%q) = %s: not JSON: %v", s, b, err)
		}
		var want strings.Builder
		for _, r := range s { // ranging over a string yields U+FFFD per bad byte
			want.WriteRune(r)
		}
		if got != want.String() {
			t.Fatalf("Append(%q) decodes to %q, want %q", s, got, want.String())
		}
	})
}
