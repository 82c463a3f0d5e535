package html_test

import (
	"bytes"
	"context"
	stdhtml "html"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/tools/txtar"
)

// consoleLine is how headless Chromium logs a page's console message or uncaught error to
// stderr with --enable-logging=stderr: `...:INFO:CONSOLE:12] "Uncaught Error: ...", source: ...`
// (older versions write CONSOLE(12)).
var consoleLine = regexp.MustCompile(`(?m)^.*:CONSOLE(?:\(\d+\)|:\d+)\].*$`)

// chromium finds a headless browser, or skips the test saying why.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on PATH (Debian: apt-get install chromium); the browser check of report.html is skipped")
	return ""
}

// render opens page in headless Chromium, with networking off, and returns the DOM it
// built, the console messages it logged, and a screenshot file.
func render(t *testing.T, browser string, page []byte) (dom string, console []string, shot string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "report.html")
	if err := os.WriteFile(path, page, 0o644); err != nil {
		t.Fatal(err)
	}
	common := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
		"--enable-logging=stderr", "--v=0", "--user-data-dir=" + filepath.Join(dir, "profile")}
	run := func(extra ...string) ([]byte, []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, browser, append(append(common, extra...), "file://"+path)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium: %v\n%s", err, stderr.Bytes())
		}
		return stdout.Bytes(), stderr.Bytes()
	}
	out, errs := run("--dump-dom")
	shot = filepath.Join(dir, "report.png")
	_, errs2 := run("--window-size=1200,1600", "--screenshot="+shot)
	for _, m := range consoleLine.FindAll(append(errs, errs2...), -1) {
		console = append(console, string(m))
	}
	return string(out), console, shot
}

// The report renders in a real browser: the DOM holds the pictures, the console stays
// silent and a screenshot comes out. A page that throws must be caught by the same check.
func TestRendersInBrowser(t *testing.T) {
	browser := chromium(t)
	_, console, _ := render(t, browser, []byte(`<!DOCTYPE html><html><body><p>x</p><script>throw new Error("planted")</script></body></html>`))
	if len(console) == 0 {
		t.Fatal("a page that throws logged nothing: the console check cannot see errors")
	}
	archive, err := txtar.ParseFile(goldenFiles(t)[0])
	if err != nil {
		t.Fatal(err)
	}
	dom, console, shot := render(t, browser, build(t, archive))
	if len(console) > 0 {
		t.Errorf("report.html logged to the console:\n%s", console)
	}
	for _, want := range []string{"<svg", "Device mesh", "Curriculum"} {
		if !bytes.Contains([]byte(dom), []byte(want)) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	st, err := os.Stat(shot)
	if err != nil || st.Size() < 10_000 {
		t.Errorf("screenshot %s: %v (size %v)", shot, err, st)
	}
	if dst := os.Getenv("MOEC_REPORT_SCREENSHOT"); dst != "" {
		if b, err := os.ReadFile(shot); err == nil {
			_ = os.WriteFile(dst, b, 0o644) // for a person to look at; the test does not depend on it
		}
	}
}

// The HunYuan-1T report, as a browser builds it, says what report.md says and says it
// rightly: every part of report.md is there, totals are written as report.md writes them,
// each plan's layout agrees with its own memory and traffic, a serving plan shows no
// training fields, and counts of one are singular.
func TestHunyuanReportInBrowser(t *testing.T) {
	browser := chromium(t)
	src, err := os.ReadFile(filepath.Join("..", "..", "..", "models", "hunyuan1t.moe"))
	if err != nil {
		t.Fatal(err)
	}
	page := buildSource(t, src)
	checkSelfContained(t, page)
	dom, console, _ := render(t, browser, page)
	if len(console) > 0 {
		t.Errorf("report.html logged to the console:\n%s", console)
	}
	text := domText(dom)

	// Everything report.md has: component, layer and FLOP breakdowns, the time breakdown,
	// alternatives, assumptions and the seed's cluster table.
	for _, want := range []string{
		"Parameters by component", "routed experts", "router embedding",
		"Layers", "Decoder (26): layers 0-24 step 2 dense, 1-25 step 2 MoE", "MoE top-1",
		"FLOPs per token (seq_len 2048)", "of which output head", "train (3 × forward, no recompute)",
		"Time", "expert all-to-all", "exposed offload traffic", "optimizer step",
		"Alternatives", "why it lost",
		"Assumptions", "offload_fragmentation", "cpu_adam_rate",
		"The seed's figures: memory, GPU count, cost and speed", "model states of the full model", "GPUs to serve the full model in fp16",
		"batch (tokens)", "training FLOPs",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("rendered report lacks %q", want)
		}
	}

	// Totals as report.md writes them, not a count of trillions.
	if m := regexp.MustCompile(`\d{5,}T training FLOPs`).FindString(text); m != "" {
		t.Errorf("training FLOPs written as %q", m)
	}
	if !strings.Contains(text, "5.04e21 training FLOPs") {
		t.Errorf("curriculum total is not 5.04e21 training FLOPs")
	}

	plans := planTexts(dom)
	trillion, serve := plans["hunyuan_1t, stage trillion"], plans["serve hunyuan_1t"]
	if trillion == "" || serve == "" {
		t.Fatalf("rendered plans %v lack the trillion stage or the serve block", keys(plans))
	}
	// The unified cache keeps the model states on the host and pages them over PCIe: the
	// page must not call that "offload none".
	for _, want := range []string{"unified_cache", "pcie", "offload: weights in, gradients out", " GiB / 745 GiB"} {
		if !strings.Contains(trillion, want) {
			t.Errorf("trillion plan lacks %q", want)
		}
	}
	if strings.Contains(trillion, "offload none") {
		t.Errorf("trillion plan says \"offload none\" beside its PCIe offload traffic")
	}
	// A serving plan decodes: no gradients, no recompute, no training MFU.
	for _, bad := range []string{"grad_accum", "recompute", "MFU", "micro-batch", "optimizer"} {
		if strings.Contains(serve, bad) {
			t.Errorf("serving plan shows the training field %q", bad)
		}
	}
	if !strings.Contains(serve, "Decoding step") {
		t.Errorf("serving plan lacks its decoding step time")
	}

	// One of a thing is singular.
	if m := regexp.MustCompile(`\b1 (experts|sequences|stages|steps|nodes|devices)\b`).FindString(text); m != "" {
		t.Errorf("rendered report says %q", m)
	}
	if !strings.Contains(text, "dense: 1 expert,") {
		t.Errorf("the dense stage's label does not say \"1 expert\"")
	}
}

var tagPattern = regexp.MustCompile(`<[^>]*>`)

// domText is the DOM's text with the tags taken out, entities decoded and runs of white
// space made one space, so phrases split over elements still match.
func domText(dom string) string {
	return strings.Join(strings.Fields(stdhtml.UnescapeString(tagPattern.ReplaceAllString(dom, " "))), " ")
}

// planTexts maps each plan's heading to the text of its box in the DOM.
func planTexts(dom string) map[string]string {
	out := map[string]string{}
	for _, box := range strings.Split(dom, `<div class="plan">`)[1:] {
		box, _, _ = strings.Cut(box, "<h2") // the last plan ends where the next section starts
		head, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(box), "<h3>"), "</h3>")
		out[stdhtml.UnescapeString(head)] = domText(box)
	}
	return out
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
