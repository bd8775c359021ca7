package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// TypeEmail is the asynq task type of every floodgate email.
const TypeEmail = "floodgate:email"

// payloadVersion is bumped on incompatible changes to [Payload].
const payloadVersion = 1

// ErrPayload marks a task payload the worker cannot use; such tasks are
// archived, never retried.
var ErrPayload = errors.New("queue: malformed payload")

// Payload is what a task carries from producer to worker: the validated,
// normalised email, and what the guard needs to decide on it again later
// (a held email's release, feedback on a sent one): its source, account and
// trust signal.
type Payload struct {
	V       int               `json:"v"`
	ID      string            `json:"id"`
	Kind    string            `json:"kind"`
	To      string            `json:"to,omitempty"`
	Name    string            `json:"name,omitempty"`
	Data    map[string]string `json:"data,omitempty"`
	Source  string            `json:"source,omitempty"`
	Account string            `json:"account,omitempty"`
	Trust   Trust             `json:"trust,omitempty"`
	// Lane is set when the email was admitted, or released, through a lane
	// of an open breaker (see [Verdict].Lane).
	Lane string `json:"lane,omitempty"`
	// Sealed holds the private fields (To, Name, Data, Source, Account)
	// encrypted by a [Keyring], which leaves them empty in the wire form.
	Sealed string `json:"sealed,omitempty"`
	// Trace is the W3C traceparent of the producer's floodgate.enqueue
	// span, so that the worker's spans continue its trace; empty when the
	// producer does not trace. It holds trace and span ids and the sampled
	// flag, nothing about the email.
	Trace      string    `json:"trace,omitempty"`
	EnqueuedAt time.Time `json:"enqueued_at"`
	ExpiresAt  time.Time `json:"expires_at"`

	raw []byte // the wire form DecodePayload read, if any
}

// Encode returns the payload's wire form.
func (p *Payload) Encode() ([]byte, error) {
	p.V = payloadVersion
	return json.Marshal(p)
}

// Bytes returns the payload's wire form without encoding it again: the
// bytes [DecodePayload] read (fields changed since are not reflected), or
// a fresh encoding for a payload built in code. It does not change p.
func (p *Payload) Bytes() ([]byte, error) {
	if p.raw != nil {
		return p.raw, nil
	}
	cp := *p
	return cp.Encode()
}

// Expired reports whether the email outlived its TTL at now.
func (p *Payload) Expired(now time.Time) bool { return !now.Before(p.ExpiresAt) }

// DecodePayload parses and checks a task payload: the fields [Client.Enqueue]
// validates (recipient, name, data keys, URLs, subject) are validated again.
// Errors wrap [ErrPayload].
func DecodePayload(b []byte) (*Payload, error) {
	var p Payload
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPayload, err)
	}
	switch {
	case p.V != payloadVersion:
		return nil, fmt.Errorf("%w: version %d, want %d", ErrPayload, p.V, payloadVersion)
	case p.ID == "" || p.Kind == "" || p.To == "":
		return nil, fmt.Errorf("%w: id, kind and to are required", ErrPayload)
	case p.ExpiresAt.IsZero():
		return nil, fmt.Errorf("%w: expires_at is required", ErrPayload)
	}
	if _, err := NormalizeAddress(p.To); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPayload, err)
	}
	if _, err := NormalizeName(p.Name); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPayload, err)
	}
	// The data too: a task pushed into Redis by something other than
	// [Client.Enqueue] must not carry a javascript: link or a subject
	// that decodes to a line break into an email.
	if err := checkData(p.Data, nil); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPayload, err)
	}
	p.raw = b
	return &p, nil
}
