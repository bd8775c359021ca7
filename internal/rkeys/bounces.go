package rkeys

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Keys of bounce and complaint accounting (the guard's bounces).
const (
	// BounceRefused is a hash of the reports refused by the bounce
	// receiver and the provider webhooks, field "<source>|<reason>", since
	// the start; bounded by sources × reasons. It does not expire.
	BounceRefused = Tag + ":bor"
)

// BounceBucket returns the key of the hourly bucket of feedback counts,
// hour being hours since the Unix epoch: a hash, field
// "<kind>|<domain>|<type>" (type sent, hard, soft or complaint; domain one
// of the policy's listed domains or "other"), so bounded by kinds ×
// domains × 4. It expires a day and two hours after its last write.
func BounceBucket(hour int64) string { return Tag + ":bo:" + strconv.FormatInt(hour, 10) }

// BounceSeen returns the dedup key of one report, named by a digest of
// id (the email id or the provider's event id, with the report's type), so
// that a report delivered twice is counted once; it holds "1" and expires.
func BounceSeen(id string) string {
	sum := sha256.Sum256([]byte(id))
	return Tag + ":bos:" + hex.EncodeToString(sum[:12])
}

//go:embed bounces.lua
var bounceLua string

// BounceScript returns the script that counts one report; feedback.lua
// documents its KEYS, ARGV and reply.
func BounceScript() *redis.Script { return redis.NewScript(bounceLua) }

// Nonce returns the key recording a one-time value of a webhook request
// (scope, e.g. "mailgun", and the value), named by a digest; it holds "1"
// and expires with the request's freshness window.
func Nonce(scope, nonce string) string {
	sum := sha256.Sum256([]byte(scope + "\x00" + nonce))
	return Tag + ":nc:" + hex.EncodeToString(sum[:12])
}
