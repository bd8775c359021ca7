package rkeys

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"sync"
)

// Digests computes the digests that keys, logs and listings name
// recipients and sources by. With a key they are HMAC-SHA256 under a
// secret that every process sharing the Redis holds, so that nobody who
// can read Redis or the logs, but not the secret, can test a guessed
// address against them. Without a key they are plain SHA-256: they hide
// addresses from casual reading, not from someone who can guess them.
//
// The package-level functions ([Recipient], [Source], ...) are the
// unkeyed Digests. A Digests is safe for concurrent use.
type Digests struct {
	keyed bool
	pool  sync.Pool // of *hasher
}

// hasher is a hash with the buffers sum needs, pooled so that a digest
// allocates nothing: a string converted for hash.Hash.Write, and the
// array given to Sum, would each escape to the heap.
type hasher struct {
	h   hash.Hash
	in  []byte
	out [sha256.Size]byte
}

// NewDigests returns the digests under key; an empty key gives the
// unkeyed ones.
func NewDigests(key []byte) *Digests {
	d := &Digests{keyed: len(key) > 0}
	k := append([]byte(nil), key...)
	d.pool.New = func() any {
		if d.keyed {
			return &hasher{h: hmac.New(sha256.New, k)}
		}
		return &hasher{h: sha256.New()}
	}
	return d
}

// Keyed reports whether d has a secret key.
func (d *Digests) Keyed() bool { return d.keyed }

// unkeyed are the digests without a key, behind the package functions.
var unkeyed = NewDigests(nil)

// sum returns the digest of the parts, each followed by a NUL except the
// last (the layout the unkeyed keys have always had: kind NUL value).
func (d *Digests) sum(parts ...string) [sha256.Size]byte {
	hs := d.pool.Get().(*hasher)
	hs.in = hs.in[:0]
	for i, p := range parts {
		if i > 0 {
			hs.in = append(hs.in, 0)
		}
		hs.in = append(hs.in, p...)
	}
	hs.h.Reset()
	hs.h.Write(hs.in)
	hs.h.Sum(hs.out[:0])
	out := hs.out
	if cap(hs.in) <= 1024 { // a huge input's buffer is not kept
		d.pool.Put(hs)
	}
	return out
}

func (d *Digests) key(typ byte, kind, s string) string {
	sum := d.sum(kind, s)
	var buf [len(Tag) + 1 + logDigest]byte // on the stack: one allocation, the string
	out := append(append(append(buf[:0], Tag...), typ), sum[:logDigest]...)
	return string(out)
}

// Recipient is [Recipient] under d.
func (d *Digests) Recipient(kind, canonical string) string { return d.key('r', kind, canonical) }

// Trace is [Trace] of [Digests.Recipient]: the trace key of a canonical
// recipient under d.
func (d *Digests) Trace(kind, canonical string) string { return d.key('e', kind, canonical) }

// Account is [Account] under d.
func (d *Digests) Account(kind, account string) string {
	return d.key('r', kind, "\x00account\x00"+account)
}

// Source is [Source] under d.
func (d *Digests) Source(kind, source string) string { return d.key('s', kind, source) }

// Group is [Group] under d.
func (d *Digests) Group(kind, group string) string { return d.key('g', kind, group) }

// SuppressionField is [SuppressionField] under d.
func (d *Digests) SuppressionField(canonical string) string {
	sum := d.sum(canonical)
	return string(sum[:supDigest])
}

// Suppression is [Suppression] under d.
func (d *Digests) Suppression(canonical string) string {
	return SuppressionOfField(d.SuppressionField(canonical))
}

// RcptHash returns the name of a canonical recipient in logs, the decision
// log, traces and listings: 16 hex digits, the start of its
// [Digests.SuppressionField], so a suppression entry and the log lines of
// its recipient carry the same name.
func (d *Digests) RcptHash(canonical string) string {
	sum := d.sum(canonical)
	return hex.EncodeToString(sum[:8])
}

// RcptHashOfField returns the [Digests.RcptHash] of the recipient a
// suppression field names.
func RcptHashOfField(field string) string {
	if len(field) < 8 {
		return hex.EncodeToString([]byte(field))
	}
	return hex.EncodeToString([]byte(field[:8]))
}
