// Package pii turns personal data into the forms that may appear in logs,
// metric labels and Redis keys.
package pii

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Hash returns a short, stable, one-way identifier for an email address
// (case-insensitive), for the logs of a component that has no guard to ask:
// 16 hex digits of an unkeyed SHA-256. With a guard, recipients are named
// by its keyed digest of the canonical address instead
// (guard.Guard.HashRecipient), which is what logs and listings use.
func Hash(addr string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(addr)))
	return hex.EncodeToString(sum[:8])
}
