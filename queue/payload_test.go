package queue

import (
	"errors"
	"testing"
	"time"
)

func TestDecodePayload(t *testing.T) {
	good := &Payload{ID: "x", Kind: "k", To: "a@example.com", ExpiresAt: time.Now()}
	b, err := good.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodePayload(b); err != nil {
		t.Fatalf("DecodePayload(good) = %v", err)
	}
	for _, in := range []string{
		``, `{`, `[]`, `{"v":2,"id":"x","kind":"k","to":"a@example.com","expires_at":"2030-01-01T00:00:00Z"}`,
		`{"v":1,"kind":"k","to":"a@example.com","expires_at":"2030-01-01T00:00:00Z"}`,
		`{"v":1,"id":"x","kind":"k","to":"a@example.com"}`,
		`{"v":1,"id":"x","kind":"k","to":"a@example.com\r\nBcc: b@example.com","expires_at":"2030-01-01T00:00:00Z"}`,
		// Data that Client.Enqueue refuses, pushed into Redis directly.
		`{"v":1,"id":"x","kind":"k","to":"a@example.com","expires_at":"2030-01-01T00:00:00Z","data":{"reset_url":"javascript:alert(1)"}}`,
		`{"v":1,"id":"x","kind":"k","to":"a@example.com","expires_at":"2030-01-01T00:00:00Z","data":{"action_url":"https://x.example/\u202e"}}`,
		`{"v":1,"id":"x","kind":"k","to":"a@example.com","expires_at":"2030-01-01T00:00:00Z","data":{"subject":"=?utf-8?q?a=0D=0ABcc:_b@example.com?="}}`,
		`{"v":1,"id":"x","kind":"k","to":"a@example.com","expires_at":"2030-01-01T00:00:00Z","data":{"Bad Key":"v"}}`,
		`{"v":1,"id":"x","kind":"k","to":"user@127.0.0.1","expires_at":"2030-01-01T00:00:00Z"}`,
		`{"v":1,"id":"x","kind":"k","to":"a@example.com","name":"\u202eevil","expires_at":"2030-01-01T00:00:00Z"}`,
	} {
		if _, err := DecodePayload([]byte(in)); !errors.Is(err, ErrPayload) {
			t.Errorf("DecodePayload(%q) = %v, want ErrPayload", in, err)
		}
	}
}

func TestPayloadBytes(t *testing.T) {
	p := &Payload{ID: "x", Kind: "k", To: "a@example.com", ExpiresAt: time.Unix(1e9, 0).UTC()}
	b, err := p.Bytes()
	if err != nil || p.V != 0 {
		t.Fatalf("Bytes() = %v, and set V to %d: it must not change p", err, p.V)
	}
	d, err := DecodePayload(b)
	if err != nil {
		t.Fatal(err)
	}
	again, err := d.Bytes()
	if err != nil || string(again) != string(b) {
		t.Fatalf("decoded Bytes() = %q, %v, want the bytes it was read from %q", again, err, b)
	}
}
