package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/spf13/cobra"

	"github.com/moec-dev/moec/runtime/serve"
)

func newServeCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		checkpoint string
		addr       string
		opt        serve.Options
	)
	cmd := &cobra.Command{
		Use:   "serve --checkpoint DIR [--addr 127.0.0.1:8080]",
		Short: "Serve a checkpoint with an OpenAI-compatible HTTP API",
		Long: `serve answers POST /v1/completions and /v1/chat/completions (OpenAI-compatible, streamed
with server-sent events when "stream": true), GET /v1/models, /healthz and /metrics
(Prometheus). Concurrent requests share one batched decoder (continuous batching); those that
find every slot busy wait in a bounded queue. Ctrl-C stops it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if checkpoint == "" {
				return usage(fmt.Errorf("serve: --checkpoint is required"))
			}
			if opt.Slots < 0 || opt.QueueDepth < 0 || opt.MaxTokens < 0 || opt.MaxPromptBytes < 0 || opt.Timeout < 0 {
				return usage(fmt.Errorf("serve: --slots, --queue, --max-tokens, --max-prompt-bytes and --timeout must not be negative"))
			}
			m, name, err := serve.Load(checkpoint)
			if err != nil {
				return err
			}
			srv, err := serve.New(m, name, opt)
			if err != nil {
				return err
			}
			defer srv.Close()
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
			fmt.Fprintf(stdout, "serving %s on http://%s (POST /v1/completions, /v1/chat/completions; GET /healthz, /metrics)\n", name, ln.Addr())
			errc := make(chan error, 1)
			go func() { errc <- hs.Serve(ln) }()
			select {
			case err := <-errc:
				return fmt.Errorf("serve: %w", err)
			case <-ctx.Done():
			}
			fmt.Fprintln(stderr, "serve: shutting down")
			shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Close() // ends streams in flight so Shutdown need not wait for them
			if err := hs.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("serve: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&checkpoint, "checkpoint", "", "a checkpoint folder, or a run folder (its newest checkpoint)")
	f.StringVar(&addr, "addr", "127.0.0.1:8080", "address to listen on")
	f.IntVar(&opt.Slots, "slots", 4, "requests decoded together in one batched step")
	f.IntVar(&opt.QueueDepth, "queue", 64, "requests that may wait for a slot (more are refused with 429)")
	f.DurationVar(&opt.Timeout, "timeout", 2*time.Minute, "per-request time limit, waiting included")
	f.IntVar(&opt.MaxTokens, "max-tokens", 2048, "largest max_tokens a request may ask for")
	f.IntVar(&opt.MaxPromptBytes, "max-prompt-bytes", 16384, "longest prompt accepted")
	return cmd
}
