package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/atomicfile"
)

// Write builds the report of prog (read from srcName) and writes report.md and report.json
// into outDir, creating it if needed. Each file is replaced atomically.
func Write(outDir string, prog *program.Program, srcName string, extra []Section) error {
	r := Build(prog, srcName, extra)
	js, err := JSON(r)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("report: create %s: %w", outDir, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(outDir, "report.md"), Markdown(r, extra), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(outDir, "report.json"), js, 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// JSON encodes the report, indented, with a final newline. encoding/json writes struct
// fields in declaration order and map keys sorted, so the bytes are deterministic.
func JSON(r *Report) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return nil, fmt.Errorf("report: encode report.json: %w", err)
	}
	return buf.Bytes(), nil
}
