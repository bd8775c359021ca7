package bounce

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/emersion/go-message"
)

// BenchmarkParse reads a Postfix DSN into a report; BenchmarkWalk is the
// baseline, go-message reading every part of the same message and nothing
// more.
func BenchmarkParse(b *testing.B) {
	msg, err := os.ReadFile("testdata/postfix-dsn.eml")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := Parse(bytes.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWalk(b *testing.B) {
	msg, err := os.ReadFile("testdata/postfix-dsn.eml")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		e, err := message.Read(bytes.NewReader(msg))
		if err != nil {
			b.Fatal(err)
		}
		if err := e.Walk(func(_ []int, p *message.Entity, _ error) error {
			if p.MultipartReader() != nil {
				return nil
			}
			_, err := io.Copy(io.Discard, p.Body)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}
