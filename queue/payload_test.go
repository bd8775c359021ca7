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
	} {
		if _, err := DecodePayload([]byte(in)); !errors.Is(err, ErrPayload) {
			t.Errorf("DecodePayload(%q) = %v, want ErrPayload", in, err)
		}
	}
}
