package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/serve"
	"github.com/moec-dev/moec/runtime/train"
)

func newServeCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		checkpoint string
		addr       string
		tokenizer  string
		device     string
		precision  string
		opt        serve.Options
	)
	cmd := &cobra.Command{
		Use:   "serve --checkpoint DIR [--addr 127.0.0.1:8080]",
		Short: "Serve a checkpoint with an OpenAI-compatible HTTP API",
		Long: `serve answers POST /v1/completions and /v1/chat/completions (OpenAI-compatible, streamed
with server-sent events when "stream": true), GET /v1/models, /v1/models/{id}, /healthz and
/metrics (Prometheus). Concurrent requests share one batched decoder (continuous batching);
a step reads up to --prefill-chunk prompt tokens beside one token of each decoding request,
so a long prompt neither waits token by token nor stalls the others (with --device, on a
GPU through moec's generated CUDA: the same batching). Requests that find
every slot busy wait in a bounded queue. SIGINT (Ctrl-C) or SIGTERM drains
it: no new connections, and the requests in flight have --drain to finish.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if checkpoint == "" {
				return usageCode(diag.CodeMissingFlag, "serve: --checkpoint is required")
			}
			if err := checkDevice(device); err != nil {
				return err
			}
			bf16, err := checkPrecision(precision, device)
			if err != nil {
				return err
			}
			opt.Device, opt.BF16 = device, bf16
			if err := checkServeFlags(opt); err != nil {
				return usage(err)
			}
			m, name, err := serve.Load(checkpoint)
			if err != nil {
				return err
			}
			dir, err := train.ResolveCheckpoint(checkpoint)
			if err != nil {
				return err
			}
			if opt.Tokenizer, opt.TokenizerConfig, err = train.LoadTokenizer(tokenizer, dir, m.Config().Vocab); err != nil {
				return err
			}
			opt.Log = stderr
			srv, err := serve.New(m, name, opt)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				srv.Close()
				return fmt.Errorf("serve: %w", err)
			}
			// systemd, Docker and Kubernetes stop a service with SIGTERM: drain on it as on Ctrl-C.
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fmt.Fprintf(stdout, "serving %s on http://%s (POST /v1/completions, /v1/chat/completions; GET /v1/models, /healthz, /metrics)\n", name, ln.Addr())
			return srv.Serve(ctx, ln)
		},
	}
	f := cmd.Flags()
	f.StringVar(&checkpoint, "checkpoint", "", "a checkpoint folder, or a run folder (its newest checkpoint)")
	f.StringVar(&addr, "addr", "127.0.0.1:8080", "address to listen on")
	deviceFlag(f, &device, "serve")
	precisionFlag(f, &precision)
	f.StringVar(&tokenizer, "tokenizer", "", "a Hugging Face tokenizer.json (or its folder) for prompts and text; default: the one kept with the checkpoint, else bytes")
	f.IntVar(&opt.Slots, "slots", 4, "requests decoded together in one batched step")
	f.IntVar(&opt.PrefillChunk, "prefill-chunk", 256, "prompt tokens one batched step reads, all requests together (chunked prefill); the decoding requests' tokens go beside them in every step")
	f.IntVar(&opt.QueueDepth, "queue", 64, "choices that may wait for a slot (more are refused with 429)")
	f.DurationVar(&opt.Timeout, "timeout", 2*time.Minute, "per-request time limit, waiting included")
	f.IntVar(&opt.MaxTokens, "max-tokens", 2048, "largest max_tokens a request may ask for")
	f.IntVar(&opt.MaxPromptBytes, "max-prompt-bytes", 16384, "longest prompt accepted")
	f.IntVar(&opt.MaxConns, "max-conns", 256, "connections held at once; more wait to be accepted")
	f.DurationVar(&opt.ReadTimeout, "read-timeout", 10*time.Second, "time a client has to send a request's headers, and again its body")
	f.DurationVar(&opt.DrainTimeout, "drain", 20*time.Second, "on SIGINT or SIGTERM, time the requests in flight have to finish")
	return cmd
}

// checkServeFlags refuses limits that are not positive. serve.Options reads a zero as "the
// default", which on the command line would silently turn --slots 0 into 4.
func checkServeFlags(opt serve.Options) error {
	for _, f := range []struct {
		name string
		v    int
	}{{"slots", opt.Slots}, {"prefill-chunk", opt.PrefillChunk}, {"queue", opt.QueueDepth}, {"max-tokens", opt.MaxTokens}, {"max-prompt-bytes", opt.MaxPromptBytes}, {"max-conns", opt.MaxConns}} {
		if f.v < 1 {
			return diag.Runtimef(diag.CodeBadRunOption, "serve: --%s %d: it must be at least 1", f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"timeout", opt.Timeout}, {"read-timeout", opt.ReadTimeout}, {"drain", opt.DrainTimeout}} {
		if f.v <= 0 {
			return diag.Runtimef(diag.CodeBadRunOption, "serve: --%s %v: it must be longer than 0s", f.name, f.v)
		}
	}
	return nil
}
