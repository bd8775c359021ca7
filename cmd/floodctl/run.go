package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/adminapi"
	"github.com/floodgate-dev/floodgate/internal/keyfile"
	"github.com/floodgate-dev/floodgate/queue"
)

// errUsage is returned after a usage problem was printed; main exits 2.
var errUsage = errors.New("usage")

// errHelp is returned after the usage was printed on request (-h, help);
// main exits 0.
var errHelp = errors.New("help")

const usage = `usage: floodctl [-api URL] [-token-file F] [-json] [-timeout D] COMMAND [ARGS]

Commands:
  breakers                      every kind's surge breaker: state, mode, reason, rate, baseline, held
  trip KIND [-reason R]         open KIND's breaker by hand
  reset KIND                    close KIND's breaker (held emails stay held)
  release KIND [-all] [-dry-run] [-limit N]
                                put held emails back in the queue, paced: by default only those
                                that pass a lane now (trusted, redeemed source, asked again); the
                                rest stay held and expire. -all releases every one (still through
                                the caps); -dry-run shows what a release would do, by lane
  purge KIND                    drop KIND's held emails (counted as shed)
  stats                         decision counts per kind
  suppress ADDR [-reason R]     add ADDR (and its variants) to the suppression list
  unsuppress ADDR               remove ADDR from the suppression list
  decisions [-limit N]          the decision log, newest first
  confirm ID                    the link in email ID (a receipt id) was used
  report ID                     the recipient of email ID did not ask for it
  hash ADDR                     ADDR's name in logs, the decision log and listings (rcpt_hash)
  trace ADDR                    what happened to ADDR's emails: every decision still inside its
                                windows (admit, dispatch, settle, release), each cap's use, the
                                suppression, held emails, each send's Message-ID and relay result
  keygen                        print a new FLOODGATE_HASH_KEY and FLOODGATE_PAYLOAD_KEYS
                                (no API call; every process sharing a Redis needs the same)

Flags (before or after the command):
  -api URL        the worker's -http address (default http://127.0.0.1:8080)
  -token-file F   file holding the admin token (default: env FLOODGATE_ADMIN_TOKEN)
  -json           print the API's JSON instead of a table
  -timeout D      per-request timeout (default 10s)

Environment:
  FLOODGATE_ADMIN_TOKEN   the admin token, when -token-file is not given

The worker serves this API only when started with -admin (on with -dev).
Exit status: 0 done, 1 the request failed, 2 usage error.
`

// globals are the flags every command accepts.
type globals struct {
	api       string
	tokenFile string
	json      bool
	timeout   time.Duration
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.api, "api", g.api, "worker admin API base URL")
	fs.StringVar(&g.tokenFile, "token-file", g.tokenFile, "file holding the admin token (default env FLOODGATE_ADMIN_TOKEN)")
	fs.BoolVar(&g.json, "json", g.json, "print JSON")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "per-request timeout")
}

// command is one subcommand: its own flags, its positional arguments and
// the request it sends.
type command struct {
	args  []string // names of the positional arguments
	flags func(fs *flag.FlagSet, o *opts)
	// request returns the call to make.
	request func(pos []string, o *opts) (method, path string, body any)
	// render prints a successful response as a table.
	render func(w io.Writer, raw json.RawMessage, pos []string, o *opts) error
}

// opts holds the subcommand flags.
type opts struct {
	reason string
	limit  int
	all    bool
	dryRun bool
}

var commands = map[string]command{
	"breakers": {
		request: func([]string, *opts) (string, string, any) { return http.MethodGet, adminapi.PathBreakers, nil },
		render:  renderBreakers,
	},
	"trip": {
		args: []string{"KIND"},
		flags: func(fs *flag.FlagSet, o *opts) {
			fs.StringVar(&o.reason, "reason", "", "why (recorded as the breaker's reason)")
		},
		request: func(pos []string, o *opts) (string, string, any) {
			var body any
			if o.reason != "" {
				body = map[string]string{"reason": o.reason}
			}
			return http.MethodPost, adminapi.BreakerPath(pos[0], "trip"), body
		},
		render: renderBreaker,
	},
	"reset": {
		args: []string{"KIND"},
		request: func(pos []string, _ *opts) (string, string, any) {
			return http.MethodPost, adminapi.BreakerPath(pos[0], "reset"), nil
		},
		render: renderBreaker,
	},
	"release": {
		args: []string{"KIND"},
		flags: func(fs *flag.FlagSet, o *opts) {
			fs.IntVar(&o.limit, "limit", 0, "look at most at N held emails (default all)")
			fs.BoolVar(&o.all, "all", false, "release every held email, not only those that pass a lane")
			fs.BoolVar(&o.dryRun, "dry-run", false, "change nothing; show what a release would do, by lane")
		},
		request: func(pos []string, o *opts) (string, string, any) {
			return http.MethodPost, adminapi.ReleasePath(pos[0], guard.ReleaseOptions{Limit: o.limit, All: o.all, DryRun: o.dryRun}), nil
		},
		render: renderRelease,
	},
	"hash": {
		args: []string{"ADDR"},
		request: func(pos []string, _ *opts) (string, string, any) {
			return http.MethodPost, adminapi.PathHash, adminapi.SuppressRequest{Address: pos[0]}
		},
		render: func(w io.Writer, raw json.RawMessage, _ []string, _ *opts) error {
			var r struct {
				Hash string `json:"hash"`
			}
			if err := json.Unmarshal(raw, &r); err != nil {
				return err
			}
			_, err := fmt.Fprintln(w, r.Hash)
			return err
		},
	},
	"trace": {
		args: []string{"ADDR"},
		request: func(pos []string, _ *opts) (string, string, any) {
			return http.MethodPost, adminapi.PathTrace, adminapi.SuppressRequest{Address: pos[0]}
		},
		render: renderTrace,
	},
	"confirm": {
		args: []string{"ID"},
		request: func(pos []string, _ *opts) (string, string, any) {
			return http.MethodPost, adminapi.PathConfirm, adminapi.FeedbackRequest{ID: pos[0]}
		},
		render: func(w io.Writer, _ json.RawMessage, pos []string, _ *opts) error {
			_, err := fmt.Fprintf(w, "confirmed %s: its link was used\n", pos[0])
			return err
		},
	},
	"report": {
		args: []string{"ID"},
		request: func(pos []string, _ *opts) (string, string, any) {
			return http.MethodPost, adminapi.PathReport, adminapi.FeedbackRequest{ID: pos[0]}
		},
		render: func(w io.Writer, _ json.RawMessage, pos []string, _ *opts) error {
			_, err := fmt.Fprintf(w, "reported %s: its recipient is suppressed for the kind\n", pos[0])
			return err
		},
	},
	"purge": {
		args: []string{"KIND"},
		request: func(pos []string, _ *opts) (string, string, any) {
			return http.MethodPost, adminapi.BreakerPath(pos[0], "purge"), nil
		},
		render: func(w io.Writer, raw json.RawMessage, pos []string, _ *opts) error {
			var r struct {
				Purged int64 `json:"purged"`
			}
			if err := json.Unmarshal(raw, &r); err != nil {
				return err
			}
			_, err := fmt.Fprintf(w, "purged %d held %s emails (counted as shed)\n", r.Purged, pos[0])
			return err
		},
	},
	"stats": {
		request: func([]string, *opts) (string, string, any) { return http.MethodGet, adminapi.PathStats, nil },
		render:  renderStats,
	},
	"suppress": {
		args: []string{"ADDR"},
		flags: func(fs *flag.FlagSet, o *opts) {
			fs.StringVar(&o.reason, "reason", "", "short token, e.g. complaint (default manual)")
		},
		request: func(pos []string, o *opts) (string, string, any) {
			return http.MethodPost, adminapi.PathSuppressions, adminapi.SuppressRequest{Address: pos[0], Reason: o.reason}
		},
		render: func(w io.Writer, _ json.RawMessage, pos []string, _ *opts) error {
			_, err := fmt.Fprintf(w, "suppressed %s: no email of any kind is admitted for it\n", pos[0])
			return err
		},
	},
	"unsuppress": {
		args: []string{"ADDR"},
		request: func(pos []string, _ *opts) (string, string, any) {
			return http.MethodDelete, adminapi.PathSuppressions, adminapi.SuppressRequest{Address: pos[0]}
		},
		render: func(w io.Writer, raw json.RawMessage, pos []string, _ *opts) error {
			var r struct {
				Removed bool `json:"removed"`
			}
			if err := json.Unmarshal(raw, &r); err != nil {
				return err
			}
			if !r.Removed {
				_, err := fmt.Fprintf(w, "%s was not on the suppression list\n", pos[0])
				return err
			}
			_, err := fmt.Fprintf(w, "removed %s from the suppression list\n", pos[0])
			return err
		},
	},
	"decisions": {
		flags: func(fs *flag.FlagSet, o *opts) { fs.IntVar(&o.limit, "limit", 0, "entries to show (default 100)") },
		request: func(_ []string, o *opts) (string, string, any) {
			return http.MethodGet, adminapi.DecisionsPath(o.limit), nil
		},
		render: renderDecisions,
	},
}

// renderRelease prints a release's counts by lane.
func renderRelease(w io.Writer, raw json.RawMessage, pos []string, _ *opts) error {
	var r guard.ReleaseResult
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	verb := "released"
	if r.DryRun {
		verb = "would release"
	}
	fmt.Fprintf(tw, "%s %d held %s emails", verb, r.Released, pos[0])
	if r.Interval > 0 && (r.Released > 0 || r.DryRun) {
		fmt.Fprintf(tw, ", one every %s", r.Interval.Round(time.Millisecond))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "LANE\tEMAILS")
	for _, lane := range slices.Sorted(maps.Keys(r.Lanes)) {
		fmt.Fprintf(tw, "%s\t%d\n", lane, r.Lanes[lane])
	}
	if r.Kept > 0 {
		fmt.Fprintf(tw, "kept held (no lane; they expire with the kind's TTL)\t%d\n", r.Kept)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Refused)) {
		fmt.Fprintf(tw, "refused again: %s\t%d\n", k, r.Refused[k])
	}
	return tw.Flush()
}

// run parses args, sends one request to the admin API and prints the
// answer to stdout. Usage and flag errors go to stderr and return errUsage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	g := globals{api: "http://127.0.0.1:8080", timeout: 10 * time.Second}
	top := flag.NewFlagSet("floodctl", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	g.register(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usage)
			return errHelp
		}
		fmt.Fprintf(stderr, "floodctl: %v\n\n%s", err, usage)
		return errUsage
	}
	if top.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	if top.Arg(0) == "help" {
		fmt.Fprint(stderr, usage)
		return errHelp
	}
	name := top.Arg(0)
	if name == "keygen" {
		// Local: secrets never travel through the API.
		hash, payload := keyfile.Generate()
		_, err := fmt.Fprintf(stdout, "FLOODGATE_HASH_KEY=%s\nFLOODGATE_PAYLOAD_KEYS=%s\n", hash, payload)
		return err
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "floodctl: unknown command %q\n\n%s", name, usage)
		return errUsage
	}
	var o opts
	fs := flag.NewFlagSet("floodctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	if cmd.flags != nil {
		cmd.flags(fs, &o)
	}
	pos, err := parseInterspersed(fs, top.Args()[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stderr, usage)
		return errHelp
	}
	if err != nil {
		fmt.Fprintf(stderr, "floodctl %s: %v\n\n%s", name, err, usage)
		return errUsage
	}
	if len(pos) != len(cmd.args) {
		want := name
		if len(cmd.args) > 0 {
			want += " " + strings.Join(cmd.args, " ")
		}
		fmt.Fprintf(stderr, "floodctl %s: want %q, got %d argument(s)\n\n%s", name, want, len(pos), usage)
		return errUsage
	}
	for i, p := range pos {
		if strings.TrimSpace(p) == "" {
			fmt.Fprintf(stderr, "floodctl %s: %s is empty\n", name, cmd.args[i])
			return errUsage
		}
	}
	if o.limit < 0 {
		fmt.Fprintf(stderr, "floodctl %s: -limit must not be negative\n", name)
		return errUsage
	}
	if g.timeout <= 0 {
		fmt.Fprintln(stderr, "floodctl: -timeout must be positive")
		return errUsage
	}

	token, err := readToken(g.tokenFile)
	if err != nil {
		return err
	}
	c, err := adminapi.New(adminapi.Config{BaseURL: g.api, Token: token})
	if err != nil {
		return err
	}
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	method, path, body := cmd.request(pos, &o)
	raw, err := c.Call(ctx, method, path, body)
	if err != nil {
		return explain(err, g.api, path, token != "")
	}
	if g.json {
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 {
			raw = json.RawMessage("{}")
		}
		_, err := fmt.Fprintf(stdout, "%s\n", raw)
		return err
	}
	if err := cmd.render(stdout, raw, pos, &o); err != nil {
		return fmt.Errorf("%s: unexpected response: %w", name, err)
	}
	return nil
}

// parseInterspersed parses flags that may come before, between or after
// positional arguments, and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// readToken reads the admin token from file, or else from the environment.
func readToken(file string) (string, error) {
	if file == "" {
		return strings.TrimSpace(os.Getenv("FLOODGATE_ADMIN_TOKEN")), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("-token-file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("-token-file %s is empty", file)
	}
	return t, nil
}

// explain turns API errors into what the operator should do.
func explain(err error, api, path string, hadToken bool) error {
	var ae *adminapi.APIError
	switch {
	case errors.Is(err, adminapi.ErrUnauthorized):
		if hadToken {
			return errors.New("unauthorized: the token was refused; set FLOODGATE_ADMIN_TOKEN (or -token-file) to the worker's admin token")
		}
		return errors.New("unauthorized: set FLOODGATE_ADMIN_TOKEN (or -token-file) to the worker's admin token")
	case errors.Is(err, adminapi.ErrUnreachable):
		cause := err
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			cause = ue.Err
		}
		return fmt.Errorf("cannot reach the admin API at %s (%v): the worker must be running with -http on that address and -admin on (-dev turns it on)", api, cause)
	case errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound && strings.HasPrefix(path, adminapi.PathBreakers):
		return fmt.Errorf("%s %s: not found (%s): unknown kind, or a worker without the breaker API", ae.Method, ae.Path, ae.Message)
	case errors.As(err, &ae):
		return fmt.Errorf("%s %s: %d %s: %s", ae.Method, ae.Path, ae.StatusCode, http.StatusText(ae.StatusCode), ae.Message)
	}
	return err
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

func renderBreakers(w io.Writer, raw json.RawMessage, _ []string, _ *opts) error {
	var r struct {
		Breakers []adminapi.Breaker `json:"breakers"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	return breakerTable(w, r.Breakers)
}

func renderBreaker(w io.Writer, raw json.RawMessage, _ []string, _ *opts) error {
	var b adminapi.Breaker
	if err := json.Unmarshal(raw, &b); err != nil {
		return err
	}
	return breakerTable(w, []adminapi.Breaker{b})
}

func breakerTable(w io.Writer, bs []adminapi.Breaker) error {
	now := time.Now()
	tw := newTable(w)
	fmt.Fprintln(tw, "KIND\tSTATE\tMODE\tREASON\tRATE/S\tBASELINE/S\tTHRESHOLD/S\tHELD\tSINCE\tUNTIL")
	for _, b := range bs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", b.Kind, b.State, dash(string(b.Mode)), dash(b.Reason),
			num(b.Rate), num(b.Baseline), num(b.Threshold), b.Held, ago(b.Since, now), until(b.Until, now))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// num formats a rate with at most three decimals.
func num(f float64) string { return strconv.FormatFloat(math.Round(f*1000)/1000, 'f', -1, 64) }

// until formats a future t as a UTC time and the time left.
func until(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.DateTime) + " (in " + t.Sub(now).Round(time.Second).String() + ")"
}

// ago formats t as a UTC time and its age.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.DateTime) + " (" + now.Sub(t).Round(time.Second).String() + " ago)"
}

// outcomeColumns are the terminal outcomes, in DESIGN.md's order.
var outcomeColumns = []queue.Outcome{queue.Sent, queue.Duplicate, queue.Capped, queue.Held, queue.Shed,
	queue.Suppressed, queue.Expired, queue.Failed}

func renderStats(w io.Writer, raw json.RawMessage, _ []string, _ *opts) error {
	var st guard.Stats
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	kinds := make([]string, 0, len(st.Kinds))
	for k := range st.Kinds {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	tw := newTable(w)
	head := []string{"KIND", "REQUESTED", "ADMITTED"}
	for _, o := range outcomeColumns {
		head = append(head, strings.ToUpper(string(o)))
	}
	head = append(head, "IN_FLIGHT", "DEFERRED", "RETRIED")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	var notes []string
	for _, k := range kinds {
		ks := st.Kinds[k]
		if ks == nil {
			continue
		}
		row := []string{k, itoa(ks.Requested), itoa(ks.Admitted)}
		for _, o := range outcomeColumns {
			row = append(row, itoa(ks.Outcomes[o]))
		}
		var deferred int64
		for _, n := range ks.Deferred {
			deferred += n
		}
		row = append(row, itoa(ks.InFlight), itoa(deferred), itoa(ks.Retried))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
		for _, o := range outcomeColumns {
			if rs := ks.Reasons[o]; len(rs) > 0 {
				notes = append(notes, fmt.Sprintf("%s %s: %s", k, o, formatCounts(rs)))
			}
		}
		if len(ks.Deferred) > 0 {
			notes = append(notes, fmt.Sprintf("%s deferred (not terminal): %s", k, formatCounts(ks.Deferred)))
		}
		if ks.Ambiguous > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d ambiguous results (connection lost after the final dot; retried or failed)", k, ks.Ambiguous))
		}
		if ks.InFlight < 0 {
			notes = append(notes, fmt.Sprintf("%s: in flight is negative: more outcomes than requests were counted", k))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
	return nil
}

func formatCounts(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		name := k
		if name == "" {
			name = "(none)"
		}
		parts = append(parts, name+"="+itoa(m[k]))
	}
	return strings.Join(parts, " ")
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func renderDecisions(w io.Writer, raw json.RawMessage, _ []string, _ *opts) error {
	var r struct {
		Decisions []guard.Decision `json:"decisions"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	if len(r.Decisions) == 0 {
		_, err := fmt.Fprintln(w, "no decisions logged")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tSTAGE\tKIND\tOUTCOME\tREASON\tTASK_ID\tRCPT_HASH")
	for _, d := range r.Decisions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Time.UTC().Format("2006-01-02 15:04:05.000"),
			d.Stage, d.Kind, d.Outcome, dash(d.Reason), d.TaskID, d.RcptHash)
	}
	return tw.Flush()
}

// renderTrace prints a recipient's trace: per kind its decisions, caps,
// held emails and sends.
func renderTrace(w io.Writer, raw json.RawMessage, _ []string, _ *opts) error {
	var tr guard.Trace
	if err := json.Unmarshal(raw, &tr); err != nil {
		return err
	}
	now := tr.At
	fmt.Fprintf(w, "recipient %s, as of %s\n", tr.RcptHash, tr.At.UTC().Format(time.DateTime))
	if s := tr.Suppression; s != nil {
		fmt.Fprintf(w, "suppressed (every kind, until removed): %s, source %s, %s\n", s.Reason, dash(s.Source), ago(s.Since, now))
	} else {
		fmt.Fprintln(w, "not on the suppression list")
	}
	if len(tr.Kinds) == 0 {
		_, err := fmt.Fprintln(w, "nothing recorded for this recipient inside any kind's windows")
		return err
	}
	stamp := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000") }
	for _, k := range tr.Kinds {
		fmt.Fprintf(w, "\n%s\n", k.Kind)
		if k.ReportedUntil != nil {
			fmt.Fprintf(w, "suppressed for %s: the recipient reported an email, %s\n", k.Kind, until(*k.ReportedUntil, now))
		}
		tw := newTable(w)
		fmt.Fprintln(tw, "TIME\tSTAGE\tOUTCOME\tREASON\tID")
		for _, e := range k.Events {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", stamp(e.Time), e.Stage, e.Outcome, dash(e.Reason), dash(e.ID))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(k.Caps) > 0 {
			tw = newTable(w)
			fmt.Fprintln(tw, "CAP\tWINDOW\tUSED\tLIMIT\tFULL\tFREES")
			for _, c := range k.Caps {
				frees := "-"
				if c.FreesAt != nil {
					frees = until(*c.FreesAt, now)
				}
				full := "no"
				if c.Full {
					full = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", c.Cap, c.Per, c.Used, c.Limit, full, frees)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if len(k.Held) > 0 {
			tw = newTable(w)
			fmt.Fprintln(tw, "HELD\tAT\tEXPIRES")
			for _, h := range k.Held {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", h.ID, h.Stage, until(h.ExpiresAt, now))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if len(k.Sends) > 0 {
			tw = newTable(w)
			fmt.Fprintln(tw, "SENT\tMESSAGE-ID\tATTEMPTS\tRESULT\tREASON\tSETTLED\tFEEDBACK")
			for _, s := range k.Sends {
				settled := "-"
				if s.SettledAt != nil {
					settled = stamp(*s.SettledAt)
				}
				result := s.Result
				if result == "" {
					result = "in flight"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", s.ID, dash(s.MessageID), s.Attempts, result, dash(s.Reason), settled, dash(s.Feedback))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	return nil
}
