package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/floodgate-dev/floodgate/queue"
)

// maxLine bounds one line of a batch. An email's data is at most 64 KiB
// (queue's limit); JSON escaping can make its line several times longer.
const maxLine = 1 << 20

// line is one email of a batch file. Unknown fields are refused, so that a
// misspelt field ("idempotencykey") cannot be silently dropped.
type line struct {
	Kind           string            `json:"kind"`
	To             string            `json:"to"`
	Name           string            `json:"name"`
	Source         string            `json:"source"`
	Data           map[string]string `json:"data"`
	IdempotencyKey string            `json:"idempotency_key"`
	Account        string            `json:"account"`
	Trust          string            `json:"trust"`
}

// verdict is what the batch prints for one non-blank line, as one JSON
// line: the receipt, or the outcome "invalid" or "error" with the reason.
type verdict struct {
	Line    int    `json:"line"`
	ID      string `json:"id,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Outcomes of lines that were not decided by the guard.
const (
	outcomeInvalid = "invalid"
	outcomeError   = "error"
)

// summary is what a batch prints last, as {"summary": …}.
type summary struct {
	Lines    int            `json:"lines"`
	Outcomes map[string]int `json:"outcomes"`
	Invalid  int            `json:"invalid"`
	Errors   int            `json:"errors"`
	Seconds  float64        `json:"seconds"`
	PerSec   float64        `json:"per_second"`
}

// batch collects the verdicts of one run; its methods are safe for
// concurrent use.
type batch struct {
	mu       sync.Mutex
	out      *json.Encoder
	stderr   io.Writer
	bar      *progressbar.ProgressBar
	s        summary
	firstErr error
}

// record prints v and counts it. err, when set, is the line's error.
func (b *batch) record(v verdict, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch v.Outcome {
	case outcomeInvalid:
		b.s.Invalid++
		// The error names the field, never its value.
		fmt.Fprintf(b.stderr, "\nline %d: %s\n", v.Line, v.Error)
	case outcomeError:
		b.s.Errors++
		fmt.Fprintf(b.stderr, "\nline %d: %s\n", v.Line, v.Error)
		if b.firstErr == nil {
			b.firstErr = fmt.Errorf("line %d: %w", v.Line, err)
		}
	default:
		b.s.Outcomes[v.Outcome]++
	}
	_ = b.out.Encode(v)
	_ = b.bar.Add(1)
}

// skip advances the progress bar over a blank line.
func (b *batch) skip() {
	b.mu.Lock()
	defer b.mu.Unlock()
	_ = b.bar.Add(1)
}

// newBar returns a progress bar whose clock starts now: started on its first
// Add, it would show one line over a few microseconds as its first rate.
func newBar(total int64, w io.Writer, visible bool) *progressbar.ProgressBar {
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("enqueue"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetVisibility(visible),
	)
	bar.StartWithoutRender()
	return bar
}

// lockedWriter serialises writes: the progress bar renders from a goroutine
// of its own when the total is unknown.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func runBatch(ctx context.Context, client *queue.Client, cfg *config, stdin io.Reader, stdout, stderr io.Writer) error {
	stderr = &lockedWriter{w: stderr}
	in, name, total := stdin, "standard input", int64(-1)
	if cfg.File != "-" {
		f, err := os.Open(cfg.File)
		if err != nil {
			return err
		}
		defer f.Close()
		in, name = f, cfg.File
		if n, err := countLines(cfg.File); err == nil && n > 0 {
			total = n
		}
	}
	start := time.Now()
	b := &batch{
		out:    json.NewEncoder(stdout),
		stderr: stderr,
		bar:    newBar(total, stderr, !cfg.NoBar),
		s:      summary{Outcomes: map[string]int{}},
	}
	type job struct {
		n int
		e queue.Email
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range cfg.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				r, err := client.Enqueue(ctx, j.e)
				v := verdict{Line: j.n, ID: r.ID, Kind: r.Kind, Outcome: string(r.Outcome), Reason: r.Reason}
				switch {
				case isInvalid(err):
					v = verdict{Line: j.n, Kind: j.e.Kind, Outcome: outcomeInvalid, Error: err.Error()}
				case err != nil:
					v = verdict{Line: j.n, Kind: j.e.Kind, Outcome: outcomeError, Error: err.Error()}
				}
				b.record(v, err)
			}
		}()
	}
	lines := 0
	readErr := readLines(in, maxLine, func(n int, text []byte, tooLong bool) bool {
		if ctx.Err() != nil {
			return false
		}
		if !tooLong && len(text) == 0 {
			b.skip()
			return true
		}
		lines++
		if tooLong {
			b.record(verdict{Line: n, Outcome: outcomeInvalid, Error: fmt.Sprintf("line is longer than %d bytes; skipped", maxLine)}, nil)
			return true
		}
		l, err := decodeLine(text)
		if err != nil {
			b.record(verdict{Line: n, Outcome: outcomeInvalid, Error: err.Error()}, nil)
			return true
		}
		select {
		case jobs <- job{n: n, e: queue.Email{Kind: l.Kind, To: l.To, Name: l.Name, Source: l.Source, Data: l.Data, IdempotencyKey: l.IdempotencyKey,
			Account: l.Account, Trust: queue.Trust(l.Trust)}}:
			return true
		case <-ctx.Done():
			return false
		}
	})
	close(jobs)
	wg.Wait()
	_ = b.bar.Finish()

	s := b.s
	s.Lines = lines
	s.Seconds = time.Since(start).Seconds()
	if s.Seconds > 0 {
		s.PerSec = float64(s.Lines) / s.Seconds
	}
	fmt.Fprintln(stderr)
	printSummary(stderr, s)
	if err := json.NewEncoder(stdout).Encode(struct {
		Summary summary `json:"summary"`
	}{s}); err != nil {
		return err
	}
	switch {
	case readErr != nil:
		return fmt.Errorf("read %s: %w", name, readErr)
	case ctx.Err() != nil:
		return fmt.Errorf("interrupted after %d lines: %w", s.Lines, ctx.Err())
	case s.Errors > 0:
		return &exitErr{exitFailed, fmt.Errorf("%d emails could not be enqueued, first: %w", s.Errors, b.firstErr)}
	case s.Invalid > 0:
		return &exitErr{exitInvalid, fmt.Errorf("%d invalid lines were not enqueued", s.Invalid)}
	}
	return nil
}

// decodeLine parses one batch line: exactly one JSON object with only the
// known fields.
func decodeLine(text []byte) (line, error) {
	var l line
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return l, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return l, errors.New("invalid JSON: more than one value on the line")
	}
	return l, nil
}

// readLines calls f with each line of r, numbered from 1, without its line
// ending and surrounding white space. A line longer than limit bytes is not
// kept: f gets it as tooLong with no text, and reading goes on with the next
// line. It stops when f returns false, at the end of r or on a read error.
func readLines(r io.Reader, limit int, f func(n int, text []byte, tooLong bool) bool) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var buf []byte
	for n := 1; ; n++ {
		buf = buf[:0]
		tooLong := false
		var err error
		for {
			var chunk []byte
			chunk, err = br.ReadSlice('\n')
			if !tooLong {
				buf = append(buf, chunk...)
				if len(bytes.TrimRight(buf, "\r\n")) > limit {
					tooLong, buf = true, buf[:0]
				}
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if errors.Is(err, io.EOF) && len(buf) == 0 && !tooLong {
			return nil // no text after the last line ending
		}
		if !f(n, bytes.TrimSpace(buf), tooLong) {
			return nil
		}
		if err != nil {
			return nil
		}
	}
}

func printSummary(w io.Writer, s summary) {
	keys := make([]string, 0, len(s.Outcomes))
	for k := range s.Outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(w, "%d lines in %.1fs (%.0f/s)\n", s.Lines, s.Seconds, s.PerSec)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-12s %d\n", k, s.Outcomes[k])
	}
	if s.Invalid > 0 {
		fmt.Fprintf(w, "  %-12s %d\n", "invalid", s.Invalid)
	}
	if s.Errors > 0 {
		fmt.Fprintf(w, "  %-12s %d\n", "errors", s.Errors)
	}
}

// countLines counts the lines of the file at path, a last line without a
// line ending included, for the progress bar's total.
func countLines(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	last := byte('\n')
	buf := make([]byte, 64<<10)
	for {
		c, err := f.Read(buf)
		if c > 0 {
			n += int64(bytes.Count(buf[:c], []byte{'\n'}))
			last = buf[c-1]
		}
		if errors.Is(err, io.EOF) {
			if last != '\n' {
				n++
			}
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
