package serve

import (
	"strings"
	"testing"
)

// feed pushes s through a textStream byte by byte and returns the chunks and whether a
// stop string ended it.
func feed(stops []string, s string) ([]string, bool) {
	ts := &textStream{stops: stops}
	var chunks []string
	for i := 0; i < len(s); i++ {
		c, stopped := ts.add(s[i])
		if c != "" {
			chunks = append(chunks, c)
		}
		if stopped {
			return chunks, true
		}
	}
	if c := ts.flush(); c != "" {
		chunks = append(chunks, c)
	}
	return chunks, false
}

func TestTextStream(t *testing.T) {
	cases := []struct {
		name    string
		stops   []string
		in      string
		want    []string
		stopped bool
	}{
		{"plain", nil, "abc", []string{"a", "b", "c"}, false},
		// A multi-byte rune is sent whole, never split across chunks.
		{"utf8", nil, "aé€😀", []string{"a", "é", "€", "😀"}, false},
		{"stop", []string{"END"}, "abENDcd", []string{"a", "b"}, true},
		// The held-back prefix of a stop string is released when the match fails.
		{"false start", []string{"END"}, "aENxEND", []string{"a", "ENx"}, true},
		{"prefix at the end", []string{"END"}, "abEN", []string{"a", "b", "EN"}, false},
		{"earliest of two", []string{"cd", "bc"}, "abcd", []string{"a"}, true},
		{"stop at start", []string{"ab"}, "abc", nil, true},
	}
	for _, c := range cases {
		got, stopped := feed(c.stops, c.in)
		if strings.Join(got, "|") != strings.Join(c.want, "|") || stopped != c.stopped {
			t.Errorf("%s: %q stopped=%v, want %q stopped=%v", c.name, got, stopped, c.want, c.stopped)
		}
	}
}

func TestRenderChat(t *testing.T) {
	got, err := renderChat([]chatMessage{{"developer", "x"}, {"user", "hi"}, {"assistant", "yo"}, {"user", "ok?"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "system: x\nuser: hi\nassistant: yo\nuser: ok?\nassistant:"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if _, err := renderChat(nil); err == nil {
		t.Error("empty conversation accepted")
	}
}
