package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/internal/atomicfile"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/lang/format"
	"github.com/moec-dev/moec/lang/parse"
)

func newFmtCommand(stdout, stderr io.Writer) *cobra.Command {
	var write, list bool
	cmd := &cobra.Command{
		Use:   "fmt [-w] [-l] FILE.moe...",
		Short: "Format .moe files in the canonical layout",
		Long: "Fmt prints each file in moec's canonical layout, keeping every comment. With -w it\n" +
			"rewrites the files in place (atomically); with -l it lists the files whose layout differs.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			failed := false
			for _, path := range args {
				src, err := os.ReadFile(path)
				if err != nil {
					return fmt.Errorf("fmt: %w", err)
				}
				file, diags := parse.File(path, src)
				if diags.HasErrors() {
					diag.RenderAll(stderr, diags, map[string][]byte{path: src})
					failed = true
					continue
				}
				out := format.Source(file, src)
				switch {
				case list:
					if !bytes.Equal(out, src) {
						fmt.Fprintln(stdout, path)
					}
				case write:
					if bytes.Equal(out, src) {
						continue
					}
					info, err := os.Stat(path)
					if err != nil {
						return fmt.Errorf("fmt: %w", err)
					}
					if err := atomicfile.WriteFile(path, out, info.Mode().Perm()); err != nil {
						return fmt.Errorf("fmt: %w", err)
					}
				default:
					if _, err := stdout.Write(out); err != nil {
						return err
					}
				}
			}
			if failed {
				return errDiagnostics
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&write, "write", "w", false, "rewrite the files in place")
	cmd.Flags().BoolVarP(&list, "list", "l", false, "list files whose formatting differs")
	return cmd
}
