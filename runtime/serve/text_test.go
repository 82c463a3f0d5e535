package serve

import (
	"encoding/json"
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
	msg := func(role, content string) chatMessage {
		return chatMessage{Role: role, Content: json.RawMessage(content)}
	}
	named := msg("user", `"hi"`)
	named.Name = "alice"
	cases := []struct {
		name    string
		msgs    []chatMessage
		want    string
		wantErr string // a part of the error message and its param
	}{
		{"strings", []chatMessage{msg("developer", `"x"`), msg("user", `"hi"`), msg("assistant", `"yo"`), msg("user", `"ok?"`)},
			"system: x\nuser: hi\nassistant: yo\nuser: ok?\nassistant:", ""},
		{"text parts", []chatMessage{msg("user", `[{"type":"text","text":"hello"},{"type":"text","text":"there"}]`)},
			"user: hello\nthere\nassistant:", ""},
		{"name", []chatMessage{named}, "user (alice): hi\nassistant:", ""},
		{"empty", nil, "", "messages is empty"},
		{"image part", []chatMessage{msg("user", `[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}}]`)},
			"", `messages[0].content[1] is a "image_url" part`},
		{"part without type", []chatMessage{msg("user", `[{"text":"a"}]`)}, "", "messages[0].content[0] has no type"},
		{"part with a stray field", []chatMessage{msg("user", `[{"type":"text","text":"a","cache":1}]`)}, "", `unknown field "cache"`},
		{"missing content", []chatMessage{msg("user", `null`)}, "", "messages[0].content is missing"},
		{"number content", []chatMessage{msg("user", `3`)}, "", "must be a string or a list of content parts"},
	}
	for _, c := range cases {
		got, err := renderChat(c.msgs)
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.wantErr == "" && got != c.want:
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Message, c.wantErr)):
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.wantErr)
		}
	}
}
