package templates

import (
	"strconv"
	"strings"
	"time"
)

// funcs returns the functions every template can call. They are pure, so
// one map serves text and HTML templates alike.
func funcs() map[string]any {
	return map[string]any{
		"expires":    humanDuration,
		"paragraphs": paragraphs,
	}
}

// humanDuration writes d the way an email would: "45 seconds", "30 minutes",
// "1 hour and 30 minutes", "24 hours", "3 days". It keeps the two largest
// units and drops the rest, so it never overstates how long a link lasts.
// Durations under 48 hours are given in hours, because "36 hours" reads
// better than "1 day and 12 hours".
func humanDuration(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d < time.Minute:
		return plural(int64(max(d, 0)/time.Second), "second")
	case d < time.Hour:
		return plural(int64(d/time.Minute), "minute")
	case d < 48*time.Hour:
		return pair(int64(d/time.Hour), "hour", int64(d%time.Hour/time.Minute), "minute")
	default:
		return pair(int64(d/day), "day", int64(d%day/time.Hour), "hour")
	}
}

func pair(n int64, unit string, m int64, subunit string) string {
	if m == 0 {
		return plural(n, unit)
	}
	return plural(n, unit) + " and " + plural(m, subunit)
}

func plural(n int64, unit string) string {
	s := strconv.FormatInt(n, 10) + " " + unit
	if n != 1 {
		s += "s"
	}
	return s
}

// paragraphs splits plain text into paragraphs (separated by blank lines),
// each a list of its lines, so an HTML template can lay out a text value as
// <p> elements with <br> between lines while html/template still escapes
// every line. Trailing spaces and empty paragraphs are dropped.
func paragraphs(s string) [][]string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	var out [][]string
	var cur []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimRight(line, " \t")
		if line == "" {
			if cur != nil {
				out = append(out, cur)
				cur = nil
			}
			continue
		}
		cur = append(cur, line)
	}
	if cur != nil {
		out = append(out, cur)
	}
	return out
}
