package main

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/moec-dev/moec/cmd/moec/internal/driver"
	"github.com/moec-dev/moec/compiler/plan"
)

// Shell completion of values. cobra's `moec completion bash|zsh|fish|powershell` writes a
// script that asks the hidden `moec __complete ARGS...` for candidates; the functions here
// answer it. They are attached by flag name over the whole command tree, so a command
// gains them by declaring the flag, and the commands' own files stay free of completion.

// flagCompletions maps a flag name to how its values complete.
func flagCompletions() map[string]cobra.CompletionFunc {
	dirs := func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveFilterDirs
	}
	return map[string]cobra.CompletionFunc{
		"stage":      completeFromFile(stageNames),
		"train":      completeFromFile(func(l *driver.Loaded, _ *cobra.Command) []string { return l.Program.TrainOrder }),
		"serve":      completeFromFile(func(l *driver.Loaded, _ *cobra.Command) []string { return l.Program.ServeOrder }),
		"only":       completeFromFile(func(l *driver.Loaded, _ *cobra.Command) []string { return l.Program.ExperimentOrder }),
		"memory":     cobra.FixedCompletions(plan.MemoryOptions(), cobra.ShellCompDirectiveNoFileComp),
		"objective":  cobra.FixedCompletions([]string{"time", "gpus", "cost"}, cobra.ShellCompDirectiveNoFileComp),
		"zero":       cobra.FixedCompletions([]string{"0", "1", "2", "3"}, cobra.ShellCompDirectiveNoFileComp),
		"checkpoint": dirs,
		"resume":     dirs,
		"from":       dirs,
		"out-root":   dirs,
		"llvm": func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return []cobra.Completion{"so"}, cobra.ShellCompDirectiveFilterFileExt
		},
	}
}

// withCompletions attaches value completion to c and every command under it: the flags
// named in flagCompletions, and `.moe` files for a command whose usage line takes one.
func withCompletions(c *cobra.Command) {
	table := flagCompletions()
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if fn, ok := table[f.Name]; ok {
				// Registration fails only for a flag registered twice or not defined;
				// VisitAll visits each defined flag once.
				_ = c.RegisterFlagCompletionFunc(f.Name, fn)
			}
		})
		if c.ValidArgsFunction == nil && strings.Contains(c.Use, "FILE.moe") {
			c.ValidArgsFunction = completeMoeFiles
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(c)
}

// completeMoeFiles offers .moe files (and folders to descend into) for a file argument.
func completeMoeFiles(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 && !strings.Contains(cmd.Use, "FILE.moe...") {
		return nil, cobra.ShellCompDirectiveNoFileComp // the one file is already given
	}
	return []cobra.Completion{"moe"}, cobra.ShellCompDirectiveFilterFileExt
}

// completeFromFile completes a flag with names read from the .moe file among the
// arguments typed so far; without one, or when the file does not load, it offers nothing
// (and no file names, which would not be valid values).
func completeFromFile(names func(*driver.Loaded, *cobra.Command) []string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		i := slices.IndexFunc(args, func(a string) bool { return strings.HasSuffix(a, ".moe") })
		if i < 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		loaded := driver.Load(args[i])
		if loaded.Program == nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, n := range names(loaded, cmd) {
			if strings.HasPrefix(n, toComplete) && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// stageNames are the stage names of the train block --train names, or of every train
// block in the file when --train is not given.
func stageNames(l *driver.Loaded, cmd *cobra.Command) []string {
	train := ""
	if f := cmd.Flags().Lookup("train"); f != nil {
		train = f.Value.String()
	}
	var names []string
	for _, name := range l.Program.TrainOrder {
		if train != "" && name != train {
			continue
		}
		for _, st := range l.Program.Trains[name].Stages {
			names = append(names, st.Name)
		}
	}
	return names
}
