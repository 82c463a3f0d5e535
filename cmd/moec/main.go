package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/cmd/moec/internal/driver"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run executes the CLI with args and returns the exit status. It never calls os.Exit, so
// tests (and the testscript harness) drive it as a user would.
func run(args []string, stdout, stderr io.Writer) (status int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "moec: internal error: %v\nplease report this with the input that caused it\n", r)
			status = exitInput
		}
	}()
	root := newRootCommand(stdout, stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ran, err := root.ExecuteC()
	return exitStatus(err, ran, args, stdout, stderr)
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "moec",
		Short:         "moec compiles Mixture-of-Experts language models",
		Long:          "moec checks, counts, plans, generates code for and trains Mixture-of-Experts language models\nwritten in the .moe language.\n\n" + exitRule,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	root.AddCommand(
		newCheckCommand(stdout, stderr),
		newFmtCommand(stdout, stderr),
		newBuildCommand(stdout, stderr),
		newPlanCommand(stdout, stderr),
		newRunCommand(stdout, stderr),
		newGenerateCommand(stdout, stderr),
		newCompressCommand(stdout, stderr),
		newEvalCommand(stdout, stderr),
		newExperimentCommand(stdout, stderr),
		newImportCommand(stdout, stderr),
		newExportCommand(stdout, stderr),
		newServeCommand(stdout, stderr),
		newTokenizeCommand(stdout),
		newExplainCommand(stdout),
		newLSPCommand(stdout),
		newVersionCommand(stdout),
	)
	root.InitDefaultCompletionCmd() // now, not in Execute, so that its misuse has codes too
	withUsageOnMisuse(root)
	withCompletions(root)
	return root
}

func newVersionCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print moec's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintln(stdout, "moec", version)
			return nil
		},
	}
}

const version = "0.1.0-dev"

// loadChecked loads and checks the .moe file at path with its imports, renders its
// diagnostics on stderr, and returns errDiagnostics when any is an error.
func loadChecked(path string, stderr io.Writer) (*driver.Loaded, error) {
	loaded := driver.Load(path)
	loaded.Render(stderr)
	if loaded.Diags.HasErrors() {
		return loaded, errDiagnostics
	}
	return loaded, nil
}
