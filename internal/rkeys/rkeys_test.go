package rkeys

import (
	"strconv"
	"strings"
	"testing"
)

func TestKeyShapes(t *testing.T) {
	if k := Recipient("password_reset", "alice@example.com"); len(k) != 14 || !strings.HasPrefix(k, Tag+"r") {
		t.Errorf("Recipient = %q (%d bytes), want 14 bytes under %s", k, len(k), Tag)
	}
	if Recipient("a", "x@y") == Recipient("b", "x@y") || Recipient("a", "x@y") == Source("a", "x@y") {
		t.Error("recipient keys of different kinds or types collide")
	}
	if k := Claim("0123456789abcdef0123456789abcdef"); len(k) != len(Tag)+1+16 {
		t.Errorf("Claim(hex id) = %q, want the raw 16 bytes", k)
	}
	if Claim("not-hex") != Tag+"c:not-hex" {
		t.Errorf("Claim(not-hex) = %q", Claim("not-hex"))
	}
}

func TestEmailTag(t *testing.T) {
	for _, id := range []string{"0123456789abcdef0123456789abcdef", "ffffffffffffffffffffffffffffffff", "00000000000000000000000000000000", "short", "not-hex-but-long-enough-0123456789"} {
		tag := EmailTag(id)
		n, err := strconv.ParseUint(tag, 10, 64)
		if err != nil || len(tag) != 9 || n < 100000000 || n > 922337202 {
			t.Errorf("EmailTag(%q) = %q, want 9 digits in [100000000, 922337202]", id, tag)
		}
		// tag + 10-digit time must stay an int64, so Redis int-encodes it.
		if _, err := strconv.ParseInt(tag+"9999999999", 10, 64); err != nil {
			t.Errorf("EmailTag(%q) = %q overflows a log entry: %v", id, tag, err)
		}
	}
}

func TestAdmitScriptRefusesUnsafeKind(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("AdmitScript with a quote in the kind did not panic")
		}
	}()
	AdmitScript(AdmitConfig{Kind: "x'; redis.call('FLUSHALL') --"})
}
