package html_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
