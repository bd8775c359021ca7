package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/floodgate-dev/floodgate/guard"
)

// Sentinel errors; match with errors.Is.
var (
	// ErrUnauthorized: the worker wants a bearer token and got none, or a
	// wrong one.
	ErrUnauthorized = errors.New("adminapi: unauthorized")
	// ErrNotFound: the worker does not serve the path (an older worker
	// without the endpoint) or does not know the kind.
	ErrNotFound = errors.New("adminapi: not found")
	// ErrUnreachable: no HTTP answer at all: connection refused, DNS,
	// timeout. The worker is down or its admin API is off.
	ErrUnreachable = errors.New("adminapi: worker not reachable")
)

// maxBody bounds a response read into memory.
const maxBody = 32 << 20

// APIError is an error response from the admin API.
type APIError struct {
	Method, Path string
	StatusCode   int
	// Message is the response's "error" field, or its body.
	Message string
}

// Error returns "adminapi: METHOD PATH: CODE STATUS: message".
func (e *APIError) Error() string {
	return fmt.Sprintf("adminapi: %s %s: %d %s: %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Is reports whether target is [ErrUnauthorized] for a 401 or
// [ErrNotFound] for a 404.
func (e *APIError) Is(target error) bool {
	return target == ErrUnauthorized && e.StatusCode == http.StatusUnauthorized ||
		target == ErrNotFound && e.StatusCode == http.StatusNotFound
}

// Config configures a [Client].
type Config struct {
	// BaseURL is the worker's HTTP address, e.g. "http://127.0.0.1:8080".
	// Required.
	BaseURL string
	// Token is sent as "Authorization: Bearer <Token>"; empty sends none,
	// which a worker whose admin API is on loopback accepts.
	Token string
	// HTTPClient sends the requests; nil means a client of its own.
	// Requests are bounded by their context.
	HTTPClient *http.Client
}

// Client calls the admin API of one worker (or any process serving the
// guard's handler). It is safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("adminapi: base URL %q: want http://HOST:PORT or https://HOST:PORT", cfg.BaseURL)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	return &Client{base: strings.TrimSuffix(cfg.BaseURL, "/"), token: cfg.Token, hc: hc}, nil
}

// BaseURL returns the address the client talks to.
func (c *Client) BaseURL() string { return c.base }

// CloseIdleConnections closes the client's idle keep-alive connections.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Call sends one request to path (which starts with "/v1/") with in, when
// not nil, as its JSON body, and returns the response body of a 2xx
// answer. Other answers are an [*APIError]; no answer wraps
// [ErrUnreachable].
func (c *Client) Call(ctx context.Context, method, path string, in any) (json.RawMessage, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("adminapi: %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("adminapi: %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("adminapi: %s %s: %w", method, path, ctx.Err())
		}
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("adminapi: %s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		p, _, _ := strings.Cut(path, "?")
		return nil, &APIError{Method: method, Path: p, StatusCode: resp.StatusCode, Message: e.Error}
	}
	return b, nil
}

// call is Call followed by decoding the body into out.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	b, err := c.Call(ctx, method, path, in)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		p, _, _ := strings.Cut(path, "?")
		return fmt.Errorf("adminapi: %s %s: decode response: %w", method, p, err)
	}
	return nil
}

// Paths of the admin API, for [Client.Call].
const (
	PathBreakers     = "/v1/breakers"
	PathStats        = "/v1/stats"
	PathSuppressions = "/v1/suppressions"
	PathDecisions    = "/v1/decisions"
	PathConfirm      = "/v1/confirm"
	PathReport       = "/v1/report"
	PathHash         = "/v1/hash"
	PathTrace        = "/v1/trace"
)

// BreakerPath returns the path of an operation ("trip", "reset",
// "release", "purge") on a kind's breaker.
func BreakerPath(kind, op string) string {
	return PathBreakers + "/" + url.PathEscape(kind) + "/" + op
}

// DecisionsPath returns the path reading up to limit decisions; limit <= 0
// leaves the worker's default.
func DecisionsPath(limit int) string {
	if limit <= 0 {
		return PathDecisions
	}
	return PathDecisions + "?limit=" + strconv.Itoa(limit)
}

// ReleasePath returns the path of a release of kind's held emails (see
// [guard.ReleaseOptions]): up to Limit (0: all), only those that pass a
// lane unless All, nothing changed with DryRun.
func ReleasePath(kind string, o guard.ReleaseOptions) string {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.All {
		q.Set("all", "1")
	}
	if o.DryRun {
		q.Set("dry_run", "1")
	}
	p := BreakerPath(kind, "release")
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

// Breaker states, as [Breaker].State.
const (
	StateClosed   = guard.BreakerClosed
	StateOpen     = guard.BreakerOpen
	StateHalfOpen = guard.BreakerHalfOpen
)

// Breaker is the state of one kind's surge breaker as the admin API shows
// it; its JSON form is the API's.
type Breaker = guard.BreakerState

// Breakers returns the state of every kind's breaker. A worker without
// breakers answers [ErrNotFound].
func (c *Client) Breakers(ctx context.Context) ([]Breaker, error) {
	var out struct {
		Breakers []Breaker `json:"breakers"`
	}
	err := c.call(ctx, http.MethodGet, PathBreakers, nil, &out)
	return out.Breakers, err
}

// Breaker returns the state of kind's breaker, or [ErrNotFound].
func (c *Client) Breaker(ctx context.Context, kind string) (Breaker, error) {
	bs, err := c.Breakers(ctx)
	if err != nil {
		return Breaker{}, err
	}
	for _, b := range bs {
		if b.Kind == kind {
			return b, nil
		}
	}
	return Breaker{}, fmt.Errorf("%w: no breaker for kind %q", ErrNotFound, kind)
}

// Trip opens kind's breaker by hand; reason may be empty.
func (c *Client) Trip(ctx context.Context, kind, reason string) (Breaker, error) {
	var in any
	if reason != "" {
		in = map[string]string{"reason": reason}
	}
	var b Breaker
	err := c.call(ctx, http.MethodPost, BreakerPath(kind, "trip"), in, &b)
	return b, err
}

// Reset closes kind's breaker. Held emails stay held until released or
// purged.
func (c *Client) Reset(ctx context.Context, kind string) (Breaker, error) {
	var b Breaker
	err := c.call(ctx, http.MethodPost, BreakerPath(kind, "reset"), nil, &b)
	return b, err
}

// Release releases held emails of kind as [guard.Guard.Release] does, and
// returns what it did (or, with DryRun, would do).
func (c *Client) Release(ctx context.Context, kind string, o guard.ReleaseOptions) (guard.ReleaseResult, error) {
	var out guard.ReleaseResult
	err := c.call(ctx, http.MethodPost, ReleasePath(kind, o), nil, &out)
	return out, err
}

// FeedbackRequest is the body of a confirm or report: the email's id,
// in the body so that it stays out of access logs.
type FeedbackRequest struct {
	ID string `json:"id"`
}

// Confirm tells the guard that the link in email id was used; see
// [guard.Guard.Confirm]. An unknown id is [ErrNotFound].
func (c *Client) Confirm(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodPost, PathConfirm, FeedbackRequest{ID: id}, nil)
}

// Report tells the guard that the recipient of email id did not ask for
// it; see [guard.Guard.Report].
func (c *Client) Report(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodPost, PathReport, FeedbackRequest{ID: id}, nil)
}

// Purge drops every held email of kind, counted as shed, and returns how
// many.
func (c *Client) Purge(ctx context.Context, kind string) (int64, error) {
	var out struct {
		Purged int64 `json:"purged"`
	}
	err := c.call(ctx, http.MethodPost, BreakerPath(kind, "purge"), nil, &out)
	return out.Purged, err
}

// Stats returns the guard's decision counts per kind.
func (c *Client) Stats(ctx context.Context) (guard.Stats, error) {
	var st guard.Stats
	err := c.call(ctx, http.MethodGet, PathStats, nil, &st)
	return st, err
}

// SuppressRequest is the body that adds or removes a suppression. The
// address travels in the body, not the URL, to stay out of access logs.
type SuppressRequest struct {
	Address string `json:"address"`
	Reason  string `json:"reason,omitempty"`
}

// Suppress adds addr to the suppression list; reason empty means
// "manual".
func (c *Client) Suppress(ctx context.Context, addr, reason string) error {
	return c.call(ctx, http.MethodPost, PathSuppressions, SuppressRequest{Address: addr, Reason: reason}, nil)
}

// Unsuppress removes addr from the suppression list and reports whether it
// was on it.
func (c *Client) Unsuppress(ctx context.Context, addr string) (bool, error) {
	var out struct {
		Removed bool `json:"removed"`
	}
	err := c.call(ctx, http.MethodDelete, PathSuppressions, SuppressRequest{Address: addr}, &out)
	return out.Removed, err
}

// Decisions returns up to limit entries of the decision log, newest first
// (limit <= 0: the worker's default, 100).
func (c *Client) Decisions(ctx context.Context, limit int) ([]guard.Decision, error) {
	var out struct {
		Decisions []guard.Decision `json:"decisions"`
	}
	err := c.call(ctx, http.MethodGet, DecisionsPath(limit), nil, &out)
	return out.Decisions, err
}

// Trace returns what the guard knows about addr: its decisions, caps,
// suppression, held emails and sends (see [guard.Trace]). The address
// travels in the body.
func (c *Client) Trace(ctx context.Context, addr string) (guard.Trace, error) {
	var out guard.Trace
	err := c.call(ctx, http.MethodPost, PathTrace, SuppressRequest{Address: addr}, &out)
	return out, err
}
