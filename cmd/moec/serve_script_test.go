package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/moec-dev/moec/codegen/cuda"
)

// scriptCondition answers the scripts' own conditions: [clang] holds where clang 16 or
// newer is on PATH (the emulated CUDA needs it).
func scriptCondition(cond string) (bool, error) {
	if cond == "clang" {
		return cuda.FindClang() != "", nil
	}
	return false, fmt.Errorf("unknown condition %q", cond)
}

// freePort is the script command `freeport VAR`: it sets VAR to a loopback TCP port free
// when asked, for a server the script starts in the background.
func freePort(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: freeport VAR")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	port := ln.Addr().(*net.TCPAddr).Port
	ts.Check(ln.Close())
	ts.Setenv(args[0], fmt.Sprint(port))
}

// completeAll is the script command `complete PORT FILE MAX_TOKENS PROMPT...`: once the
// server on 127.0.0.1:PORT answers /healthz (it may take two minutes to compile), it posts
// one greedy completion per prompt, all at once, and writes each prompt and its text (as
// Go quotes them) to FILE, in the prompts' order.
func completeAll(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 4 {
		ts.Fatalf("usage: complete PORT FILE MAX_TOKENS PROMPT...")
	}
	base := "http://127.0.0.1:" + args[0]
	for deadline := time.Now().Add(2 * time.Minute); ; {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			ts.Fatalf("the server on port %s did not answer /healthz within two minutes: %v", args[0], err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	prompts := args[3:]
	texts, errs := make([]string, len(prompts)), make([]error, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"prompt":%q,"max_tokens":%s,"temperature":0}`, p, args[2])
			resp, err := http.Post(base+"/v1/completions", "application/json", strings.NewReader(body))
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK {
				errs[i] = fmt.Errorf("status %d: %s (%v)", resp.StatusCode, raw, err)
				return
			}
			var c struct {
				Choices []struct {
					Text string `json:"text"`
				} `json:"choices"`
			}
			if err := json.Unmarshal(raw, &c); err != nil || len(c.Choices) != 1 {
				errs[i] = fmt.Errorf("an answer without one choice: %s (%v)", raw, err)
				return
			}
			texts[i] = c.Choices[0].Text
		}()
	}
	wg.Wait()
	var out bytes.Buffer
	for i, p := range prompts {
		if errs[i] != nil {
			ts.Fatalf("prompt %q: %v", p, errs[i])
		}
		fmt.Fprintf(&out, "%q -> %q\n", p, texts[i])
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), out.Bytes(), 0o644))
}

// generated is the script command `generated FILE PROMPT OUT...`: for each prompt and the
// file OUT holding what `moec generate --prompt PROMPT` wrote (the prompt, its text, a
// newline), it writes the prompt and the text to FILE as `complete` writes a served one:
// Go-quoted, each byte that is not UTF-8 a U+FFFD, as the server's JSON carries it.
func generated(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 3 || len(args)%2 != 1 {
		ts.Fatalf("usage: generated FILE PROMPT OUT...")
	}
	var out bytes.Buffer
	for i := 1; i < len(args); i += 2 {
		prompt, text := args[i], strings.TrimSuffix(ts.ReadFile(args[i+1]), "\n")
		rest, ok := strings.CutPrefix(text, prompt)
		if !ok {
			ts.Fatalf("%s does not start with the prompt %q", args[i+1], prompt)
		}
		fmt.Fprintf(&out, "%q -> %q\n", prompt, string([]rune(rest)))
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), out.Bytes(), 0o644))
}
