package guard

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Rate is a count per period, written "N/duration": "3/1h", "200/1s",
// "600/1m". The duration may omit its number ("200/s") and may use "d" for
// days ("10/1d"). The zero Rate is unset.
type Rate struct {
	N   int
	Per time.Duration
}

// ParseRate parses s as a [Rate]. N and the duration must be positive.
func ParseRate(s string) (Rate, error) {
	num, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, fmt.Errorf("rate %q: want N/duration, e.g. 3/1h", s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil {
		return Rate{}, fmt.Errorf("rate %q: count is not an integer", s)
	}
	if n <= 0 {
		return Rate{}, fmt.Errorf("rate %q: count must be positive", s)
	}
	d, err := parseDuration(strings.TrimSpace(per))
	if err != nil {
		return Rate{}, fmt.Errorf("rate %q: %w", s, err)
	}
	if d <= 0 {
		return Rate{}, fmt.Errorf("rate %q: duration must be positive", s)
	}
	return Rate{N: n, Per: d}, nil
}

// String returns r in the form [ParseRate] reads, e.g. "3/1h".
func (r Rate) String() string {
	if r.N == 0 && r.Per == 0 {
		return ""
	}
	return strconv.Itoa(r.N) + "/" + formatDuration(r.Per)
}

// UnmarshalYAML implements yaml.Unmarshaler for a scalar "N/duration".
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("rate must be a string like 3/1h")
	}
	v, err := ParseRate(n.Value)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// MarshalText implements encoding.TextMarshaler, so rates print as "3/1h"
// in JSON.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// parseDuration is time.ParseDuration plus a "d" (24h) unit and a bare unit
// meaning one of it ("s", "h").
func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("duration is empty")
	}
	switch s {
	case "ms", "s", "m", "h", "d":
		s = "1" + s
	}
	if strings.HasSuffix(s, "d") {
		n, err := strconv.ParseFloat(strings.TrimSuffix(s, "d"), 64)
		if err != nil || n > 1e5 || n < -1e5 {
			return 0, fmt.Errorf("duration %q is not valid", s)
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q is not valid (use e.g. 30s, 2m, 1h, 1d)", s)
	}
	return d, nil
}

// formatDuration prints d in its largest whole unit: "24h", "2m", "1s",
// "500ms"; anything else as time.Duration.String.
func formatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	case d%time.Millisecond == 0:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	}
	return d.String()
}

// Limit is a sending rate with a burst: the GCRA behind the global and
// per-domain rates lets Burst sends through at once, then Rate.
type Limit struct {
	Rate Rate
	// Burst is how many sends may go back to back; zero means Rate.N.
	Burst int
}

// EffectiveBurst returns Burst, or Rate.N when Burst is zero.
func (l Limit) EffectiveBurst() int {
	if l.Burst > 0 {
		return l.Burst
	}
	return l.Rate.N
}

// String returns l as "rate" or "rate burst N".
func (l Limit) String() string {
	if l.Burst == 0 {
		return l.Rate.String()
	}
	return l.Rate.String() + " burst " + strconv.Itoa(l.Burst)
}
