package queue

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
)

// Key is one payload key: an id, written with every payload it seals so
// that keys can be rotated, and 32 secret bytes.
type Key struct {
	ID     string
	Secret []byte
}

// Keyring seals the fields of a [Payload] that identify or authenticate,
// the recipient's address and name, the template data (reset and
// verification links are bearer tokens), the source and the account,
// with XChaCha20-Poly1305 (RFC 8439 with a 192-bit random nonce), so that
// queued, held and archived tasks hold none of them in plaintext. The
// first key seals; every key opens, so a new key can be put first while
// tasks sealed with the old one drain. The email's id and kind are bound to
// the ciphertext (they stay readable: the guard and the worker route by
// them).
//
// A nil *Keyring seals nothing and opens only plaintext payloads. A
// Keyring is safe for concurrent use.
type Keyring struct {
	primary string
	aeads   map[string]cipher.AEAD
}

// NewKeyring returns a keyring of keys, the first of which seals.
func NewKeyring(keys ...Key) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("queue: keyring: no keys")
	}
	k := &Keyring{primary: keys[0].ID, aeads: make(map[string]cipher.AEAD, len(keys))}
	for _, key := range keys {
		if !validKeyID(key.ID) {
			return nil, fmt.Errorf("queue: keyring: key id %q must be 1-16 lower-case letters, digits, '_' or '-'", key.ID)
		}
		if _, dup := k.aeads[key.ID]; dup {
			return nil, fmt.Errorf("queue: keyring: key id %q twice", key.ID)
		}
		a, err := chacha20poly1305.NewX(key.Secret)
		if err != nil {
			return nil, fmt.Errorf("queue: keyring: key %q: %w (want %d bytes)", key.ID, err, chacha20poly1305.KeySize)
		}
		k.aeads[key.ID] = a
	}
	return k, nil
}

func validKeyID(s string) bool {
	return s != "" && len(s) <= 16 && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	})
}

// ParseKeys reads keys written "ID:BASE64" (the 32 secret bytes in
// standard base64), separated by commas, spaces or newlines, as in the
// FLOODGATE_PAYLOAD_KEYS variable or a key file; the first seals. Lines
// starting with '#' are comments.
func ParseKeys(text string) ([]Key, error) {
	var keys []Key
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, f := range strings.FieldsFunc(line, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\r' }) {
			id, b64, ok := strings.Cut(f, ":")
			secret, err := base64.StdEncoding.DecodeString(b64)
			if !ok || err != nil || len(secret) != chacha20poly1305.KeySize {
				return nil, fmt.Errorf("queue: payload key %d: want ID:BASE64 of %d bytes", len(keys)+1, chacha20poly1305.KeySize)
			}
			keys = append(keys, Key{ID: id, Secret: secret})
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("queue: no payload keys")
	}
	return keys, nil
}

// NewKey returns a random key with id.
func NewKey(id string) Key {
	secret := make([]byte, chacha20poly1305.KeySize)
	_, _ = rand.Read(secret)
	return Key{ID: id, Secret: secret}
}

// String returns the key as [ParseKeys] reads it. It is the secret: keep
// it out of logs.
func (k Key) String() string { return k.ID + ":" + base64.StdEncoding.EncodeToString(k.Secret) }

// private are the fields a keyring seals.
type private struct {
	To      string            `json:"to"`
	Name    string            `json:"name,omitempty"`
	Data    map[string]string `json:"data,omitempty"`
	Source  string            `json:"source,omitempty"`
	Account string            `json:"account,omitempty"`
}

func aad(p *Payload) []byte { return []byte("floodgate payload\x00" + p.ID + "\x00" + p.Kind) }

// Encode returns p's wire form, its private fields sealed (plaintext with a
// nil k).
func (k *Keyring) Encode(p *Payload) ([]byte, error) {
	if k == nil {
		return p.Encode()
	}
	pt, err := json.Marshal(private{To: p.To, Name: p.Name, Data: p.Data, Source: p.Source, Account: p.Account})
	if err != nil {
		return nil, err
	}
	a := k.aeads[k.primary]
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(pt)+a.Overhead())
	_, _ = rand.Read(nonce)
	sealed := a.Seal(nonce, nonce, pt, aad(p))
	cp := *p
	cp.To, cp.Name, cp.Data, cp.Source, cp.Account = "", "", nil, "", ""
	cp.Sealed = k.primary + ":" + base64.RawStdEncoding.EncodeToString(sealed)
	return cp.Encode()
}

// Decode parses a task payload, sealed or not, as [DecodePayload] does
// (and with its checks), opening the sealed fields. The payload's Bytes
// stay the sealed wire form. A sealed payload whose key is not in k, or
// that was changed, is an [ErrPayload].
func (k *Keyring) Decode(b []byte) (*Payload, error) {
	var p Payload
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPayload, err)
	}
	if p.Sealed == "" {
		return DecodePayload(b)
	}
	kid, b64, _ := strings.Cut(p.Sealed, ":")
	var a cipher.AEAD
	if k != nil {
		a = k.aeads[kid]
	}
	if a == nil {
		return nil, fmt.Errorf("%w: sealed with key %q, which this process does not have", ErrPayload, kid)
	}
	sealed, err := base64.RawStdEncoding.DecodeString(b64)
	if err != nil || len(sealed) < a.NonceSize()+a.Overhead() {
		return nil, fmt.Errorf("%w: sealed fields malformed", ErrPayload)
	}
	pt, err := a.Open(nil, sealed[:a.NonceSize()], sealed[a.NonceSize():], aad(&p))
	if err != nil {
		return nil, fmt.Errorf("%w: sealed fields do not open with key %q (changed, or another email's)", ErrPayload, kid)
	}
	var priv private
	if err := json.Unmarshal(pt, &priv); err != nil {
		return nil, fmt.Errorf("%w: sealed fields: %v", ErrPayload, err)
	}
	p.To, p.Name, p.Data, p.Source, p.Account, p.Sealed = priv.To, priv.Name, priv.Data, priv.Source, priv.Account, ""
	plain, err := p.Encode()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPayload, err)
	}
	out, err := DecodePayload(plain)
	if err != nil {
		return nil, err
	}
	out.raw = b
	return out, nil
}
