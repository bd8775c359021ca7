// Package pii turns personal data into the forms that may appear in logs,
// metric labels and Redis keys.
package pii

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Hash returns a short, stable, one-way identifier for an email address
// (case-insensitive), for logs ("rcpt_hash") and investigation. It is not a
// secret-keyed hash: it hides addresses from casual reading, and lets an
// operator who already knows an address find its lines.
func Hash(addr string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(addr)))
	return hex.EncodeToString(sum[:8])
}
