package smtpsink

import (
	"bytes"
	"strings"
	"testing"
)

// BenchmarkRecord measures what the sink does per message after reading it:
// header scan, DKIM verification and storage. bench/sink-ingest.sh measures
// the whole SMTP path against postfix's smtp-sink.
func BenchmarkRecord(b *testing.B) {
	keys := newTestKeys(b)
	body := strings.Repeat(strings.Repeat("x", 76)+"\r\n", 26)
	plain := newMessage("bench", "<bench@example.org>", body)
	cases := []struct {
		name string
		msg  []byte
	}{
		{"unsigned", plain},
		{"rsa2048", signB(b, plain, "rsa1", keys.rsa)},
		{"ed25519", signB(b, plain, "ed1", keys.ed)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			s, err := New(Config{Keys: keys.records})
			if err != nil {
				b.Fatal(err)
			}
			rcpts := []string{"user@example.com"}
			b.SetBytes(int64(len(c.msg)))
			b.ReportAllocs()
			for b.Loop() {
				m := s.record("a@example.org", rcpts, bytes.Clone(c.msg), false)
				if c.name != "unsigned" && m.DKIM[0].Result != ResultPass {
					b.Fatalf("DKIM = %+v", m.DKIM)
				}
			}
		})
	}
}
