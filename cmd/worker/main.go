// Command worker delivers the emails that applications enqueue with
// floodgate's queue package: it guards, renders, DKIM-signs and sends them.
//
//	worker -dev                                    # embedded Redis, sink and keys
//	worker -redis redis://127.0.0.1:6379 -smtp relay.example.com:587 \
//	       -smtp-user mailer -dkim-domain example.com \
//	       -dkim-key s1=rsa.pem -dkim-key s2=ed25519.pem \
//	       -bounce-domain bounce.example.com -bounce-smtp :25
//
// With -bounce-domain every email carries a signed VERP return path;
// -bounce-smtp receives the bounces and complaints sent to it, and the
// provider webhooks (/v1/webhooks/{ses,sendgrid,mailgun}) take the
// providers' events, on -http and on -webhooks-http.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}
