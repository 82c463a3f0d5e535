package megatron

import (
	"fmt"
	"io"
	"strings"
)

// Write prints the launch as a shell command with comments for what it cannot express.
// The command is the same on every node; a multi-node launch reads the node's index and the
// rendezvous address from NODE_RANK and MASTER_ADDR, and every value only the user knows
// (data, tokenizer, checkpoint directories) from a variable the command stops without.
func (l *Launch) Write(w io.Writer) error {
	var b strings.Builder
	ly := l.Layout
	fmt.Fprintf(&b, "# Megatron-Core launch for train %s, stage %s: %s, dp %d, ep %d, tp %d, pp %d, micro-batch %d, %d sequences per step.\n",
		l.Train, l.Stage, plural(l.GPUs, "GPU"), ly.DP, ly.EP, ly.TP, ly.PP, ly.MicroBatch, ly.Batch)
	fmt.Fprintf(&b, "# World size %d = dp %d × tp %d × pp %d%s.\n", l.GPUs, ly.DP, ly.TP, ly.PP, l.nodesText())
	if l.Batch != "" {
		fmt.Fprintf(&b, "# Batch: %s.\n", l.Batch)
	}
	if len(l.Unsupported) > 0 {
		b.WriteString("#\n# NOT EXPRESSED: moec trains these, the arguments below do not:\n")
		for _, u := range l.Unsupported {
			fmt.Fprintf(&b, "#   - %s\n", u)
		}
	}
	if len(l.Notes) > 0 {
		b.WriteString("#\n# Notes:\n")
		for _, n := range l.Notes {
			fmt.Fprintf(&b, "#   - %s\n", n)
		}
	}
	for _, e := range l.Env {
		fmt.Fprintf(&b, "%s=%s ", e.Name, shellQuote(e.Value))
	}
	b.WriteString("torchrun \\\n  ")
	fmt.Fprintf(&b, "--nnodes %d", l.Nodes)
	if l.Nodes > 1 {
		fmt.Fprintf(&b, " --node-rank %s", userValue("NODE_RANK", fmt.Sprintf("set NODE_RANK to the index of this node, 0 to %d", l.Nodes-1)))
	}
	if l.LastNodeGPUs > 0 {
		fmt.Fprintf(&b, " --nproc-per-node \"$((NODE_RANK < %d ? %d : %d))\"", l.Nodes-1, l.GPUsPerNode, l.LastNodeGPUs)
	} else {
		fmt.Fprintf(&b, " --nproc-per-node %d", l.GPUsPerNode)
	}
	if l.Nodes > 1 {
		fmt.Fprintf(&b, " \\\n  --master-addr %s --master-port \"${MASTER_PORT:-29500}\"", userValue("MASTER_ADDR", "set MASTER_ADDR to the address of node 0"))
	}
	b.WriteString(" \\\n  pretrain_gpt.py")
	for _, a := range l.Args {
		b.WriteString(" \\\n  ")
		b.WriteString(a.Flag)
		switch {
		case a.Env != "":
			b.WriteString(" ")
			b.WriteString(userValue(a.Env, a.Value))
		case a.Value != "":
			b.WriteString(" ")
			b.WriteString(shellQuote(a.Value))
		}
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// nodesText says how the ranks sit on nodes and how to start them.
func (l *Launch) nodesText() string {
	const start = ". Start the command on every node with NODE_RANK set to its index and MASTER_ADDR to the address of node 0"
	switch {
	case l.Nodes <= 1:
		return ", on one node"
	case l.LastNodeGPUs == 0:
		return fmt.Sprintf(": %d nodes × %d ranks", l.Nodes, l.GPUsPerNode) + start
	}
	s := fmt.Sprintf(", not a whole number of %d-GPU nodes: %s run %d ranks and the last (NODE_RANK %d) runs %d, which torchrun numbers after the others",
		l.GPUsPerNode, plural(l.Nodes-1, "node"), l.GPUsPerNode, l.Nodes-1, l.LastNodeGPUs)
	if tp := l.Layout.TP; tp > 1 && l.LastNodeGPUs%tp != 0 {
		s += fmt.Sprintf(" (a tensor-parallel group of %d then spans the last two nodes, which the plan did not time)", tp)
	}
	return s + start
}

// userValue is a double-quoted expansion of the environment variable env that stops the
// command with message when it is unset. What a shell expands, or ends the word on, inside
// "${...}" is dropped from the message: quotes (bash pairs a ' there), $, `, \ and }.
func userValue(env, message string) string {
	message = strings.Map(func(r rune) rune {
		if strings.ContainsRune("\"'$`\\}", r) {
			return -1
		}
		return r
	}, message)
	return fmt.Sprintf("\"${%s:?%s}\"", env, message)
}

func microBatches(n int) string {
	if n == 1 {
		return "1 micro-batch"
	}
	return fmt.Sprintf("%d micro-batches", n)
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// shellQuote quotes a value that a shell would otherwise expand ("[0]*3" is a glob).
func shellQuote(s string) string {
	if strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.+/:=,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
