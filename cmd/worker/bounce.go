package main

import (
	"context"

	"github.com/floodgate-dev/floodgate/guard"
)

// smtpSuppressor records the worker's own hard bounces (the relay refused
// the recipient during the session) with source smtp.
type smtpSuppressor struct{ g *guard.Guard }

func (s smtpSuppressor) Suppress(ctx context.Context, addr, reason string) error {
	return s.g.SuppressFrom(ctx, addr, reason, guard.SourceSMTP)
}
