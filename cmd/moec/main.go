package main

import (
	"fmt"
	"io"
	"os"
	"strings"

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
	return exitStatus(err, ran, root, stderr)
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
	withUsageOnMisuse(root)
	withCompletions(root)
	return root
}

// withUsageOnMisuse makes a wrong number of arguments or a bad flag name the command's
// usage line after the error, for root and every command under it. The root silences
// cobra's own usage dump (a page of flags after every failure, a missing file included),
// so misuse alone gets the line that says how the command is called.
func withUsageOnMisuse(c *cobra.Command) {
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return usageError(cmd, err)
			}
			return nil
		}
	}
	c.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError(cmd, err) })
	for _, sub := range c.Commands() {
		withUsageOnMisuse(sub)
	}
}

// usageError is err followed by how cmd is called and where the full help is. main
// prefixes every error with "moec: ", so a misuse of the root command itself is not
// named again ("moec: moec: unknown flag"); a subcommand's is named by its path under the
// root ("moec: check: ...", "moec: export hf: ...").
func usageError(cmd *cobra.Command, err error) error {
	if cmd.HasParent() {
		err = fmt.Errorf("%s: %w", strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" "), err)
	}
	return usage(fmt.Errorf("%w\nusage: %s\nrun '%s --help' for more", err, cmd.UseLine(), cmd.CommandPath()))
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
