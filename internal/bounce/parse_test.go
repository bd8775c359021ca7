package bounce

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/floodgate-dev/floodgate/guard"
)

func TestParse(t *testing.T) {
	tests := []struct {
		file   string
		format string
		want   []Recipient
	}{
		{"postfix-dsn.eml", FormatDSN, []Recipient{{Address: "gone@example.com", Original: "gone@example.com", Action: "failed", Status: "5.1.1", Type: guard.BounceHard}}},
		{"delay-dsn.eml", FormatDSN, []Recipient{{Address: "full@example.com", Action: "delayed", Status: "4.2.2", Type: guard.BounceSoft}}},
		{"gaveup-dsn.eml", FormatDSN, []Recipient{
			{Address: "later@example.com", Action: "failed", Status: "4.4.7", Type: guard.BounceSoft},
			{Address: "second@example.com", Original: "second@example.com", Action: "failed", Status: "5.0.0", Type: guard.BounceHard},
		}},
		{"exim-text.eml", FormatText, []Recipient{{Address: "nobody@example.org", Status: "5.1.1", Type: guard.BounceHard}}},
		{"qmail-text.eml", FormatText, []Recipient{{Address: "lost@example.info", Status: "5.1.1", Type: guard.BounceHard}}},
		{"exim-delay.eml", FormatText, []Recipient{{Address: "waiting@example.org", Status: "4.3.0", Type: guard.BounceSoft}}},
		{"arf.eml", FormatARF, []Recipient{{Address: "angry@example.com", Type: guard.BounceComplaint}}},
		{"arf-enclosed.eml", FormatARF, []Recipient{{Address: "carol@isp.example", Type: guard.BounceComplaint}}},
		{"arf-notspam.eml", FormatARF, []Recipient{{Address: "happy@isp.example"}}},
		{"vacation.eml", FormatAutoReply, nil},
	}
	for _, tt := range tests {
		f, err := os.Open(filepath.Join("testdata", tt.file))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Parse(f)
		f.Close()
		if err != nil {
			t.Errorf("Parse(%s) = %v", tt.file, err)
			continue
		}
		// A text bounce names the bouncing MTA's own addresses too; the
		// receiver keeps only the recipient its token names.
		got := rep.Recipients
		if tt.format == FormatText {
			got = nil
			for _, r := range rep.Recipients {
				if r.Type != "" {
					got = append(got, r)
				}
			}
		}
		if rep.Format != tt.format || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Parse(%s) = %s %+v, want %s %+v", tt.file, rep.Format, got, tt.format, tt.want)
		}
	}
}

func TestParseTextIgnoresTheCopy(t *testing.T) {
	f, err := os.Open("testdata/exim-text.eml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Recipients {
		if r.Address == "victim@example.net" {
			t.Errorf("an address in the returned copy was read as a recipient: %+v", r)
		}
	}
}

func TestParseHostile(t *testing.T) {
	tests := map[string]string{
		"empty":        "",
		"no header":    " leading space\n",
		"deep nesting": strings.Repeat("Content-Type: multipart/mixed; boundary=x\n\n--x\n", 50),
		"many parts":   "Content-Type: multipart/report; boundary=x\n\n" + strings.Repeat("--x\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.1.1\n\n", 200) + "--x--\n",
		"truncated":    "Content-Type: multipart/report; boundary=x\n\n--x\nContent-Type: message/delivery-status\n\nFinal-Recip",
		"bad address":  "Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822; <a@b\r\n c>\nAction: failed\nStatus: 5.1.1\n",
	}
	for name, msg := range tests {
		rep, err := Parse(strings.NewReader(msg))
		if err != nil {
			continue
		}
		if len(rep.Recipients) > maxParts {
			t.Errorf("%s: %d recipients, more than the part bound", name, len(rep.Recipients))
		}
		for _, r := range rep.Recipients {
			if strings.ContainsAny(r.Address, "\r\n <>") {
				t.Errorf("%s: address %q", name, r.Address)
			}
		}
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.eml")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := Parse(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		for _, r := range rep.Recipients {
			if strings.ContainsAny(r.Address, "\r\n") {
				t.Fatalf("address %q has CR or LF", r.Address)
			}
			switch r.Type {
			case "", guard.BounceHard, guard.BounceSoft, guard.BounceComplaint:
			default:
				t.Fatalf("type %q", r.Type)
			}
		}
	})
}
