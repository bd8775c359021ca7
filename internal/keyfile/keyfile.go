// Package keyfile loads the secrets every floodgate process that shares a
// Redis must hold alike: the key of the recipient digests (guard.Config
// HashKey) and the payload keys (queue.Keyring), each from a file or an
// environment variable, so that neither appears in argv.
package keyfile

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/floodgate-dev/floodgate/queue"
)

// Environment variables read by [Load].
const (
	EnvHashKey     = "FLOODGATE_HASH_KEY"
	EnvPayloadKeys = "FLOODGATE_PAYLOAD_KEYS"
)

// Secrets are the loaded keys; zero values mean none.
type Secrets struct {
	HashKey []byte
	Keyring *queue.Keyring
}

// minHashKey is the least length of a hash key: 128 bits.
const minHashKey = 16

// Load reads the hash key from hashFile or FLOODGATE_HASH_KEY (base64, or
// text of at least 16 bytes) and the payload keys from payloadFile or
// FLOODGATE_PAYLOAD_KEYS (queue.ParseKeys). A file wins over its variable.
// Either may be missing; required says whether that is an error, whose
// message tells how to make them.
func Load(getenv func(string) string, hashFile, payloadFile string, required bool) (Secrets, error) {
	var s Secrets
	hash, err := read(getenv, EnvHashKey, hashFile)
	if err != nil {
		return s, err
	}
	payload, err := read(getenv, EnvPayloadKeys, payloadFile)
	if err != nil {
		return s, err
	}
	if hash != "" {
		if s.HashKey, err = ParseHashKey(hash); err != nil {
			return s, err
		}
	}
	if payload != "" {
		keys, err := queue.ParseKeys(payload)
		if err != nil {
			return s, err
		}
		if s.Keyring, err = queue.NewKeyring(keys...); err != nil {
			return s, err
		}
	}
	if required && (s.HashKey == nil || s.Keyring == nil) {
		return s, errors.New("no " + EnvHashKey + " or " + EnvPayloadKeys + " (or -hash-key-file, -payload-key-file): " +
			"every process sharing the Redis needs the same two secrets, so that recipients are not named by guessable digests " +
			"and queued emails do not hold addresses and reset links in plaintext; make them with `floodctl keygen`")
	}
	return s, nil
}

// ParseHashKey reads a hash key: standard base64 of at least 16 bytes, or
// any other text of at least 16 bytes taken as it is.
func ParseHashKey(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	if b, err := base64.StdEncoding.DecodeString(text); err == nil && len(b) >= minHashKey {
		return b, nil
	}
	if len(text) < minHashKey {
		return nil, fmt.Errorf("%s: at least %d bytes", EnvHashKey, minHashKey)
	}
	return []byte(text), nil
}

func read(getenv func(string) string, env, file string) (string, error) {
	if file == "" {
		return getenv(env), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("key file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Generate returns a new hash key (base64) and payload key line, as
// [Load] reads them.
func Generate() (hashKey, payloadKeys string) {
	k := queue.NewKey("k1")
	h := queue.NewKey("h")
	return base64.StdEncoding.EncodeToString(h.Secret), k.String()
}
