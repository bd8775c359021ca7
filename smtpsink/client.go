package smtpsink

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Client drives the HTTP API of a sink running elsewhere, for drills and
// tests against the standalone binary. It is safe for concurrent use.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client for the sink whose API is at baseURL, such as
// "http://127.0.0.1:8025". Requests are bounded by their context only.
func NewClient(baseURL string) *Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &Client{base: strings.TrimSuffix(baseURL, "/"), hc: &http.Client{Transport: tr}}
}

// APIError is an error response from the sink's API.
type APIError struct {
	Method, Path string
	StatusCode   int
	Message      string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("smtpsink: %s %s: %d %s: %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Messages returns the messages matching q, newest first. A Limit of 0 or
// less asks for every stored message.
func (c *Client) Messages(ctx context.Context, q Query) ([]Message, error) {
	v := url.Values{}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	} else {
		v.Set("limit", "all")
	}
	if q.To != "" {
		v.Set("to", q.To)
	}
	if q.Kind != "" {
		v.Set("kind", q.Kind)
	}
	if q.Search != "" {
		v.Set("q", q.Search)
	}
	var msgs []Message
	err := c.do(ctx, http.MethodGet, "/api/messages?"+v.Encode(), &msgs)
	return msgs, err
}

// Message returns one message, without its raw bytes; see [Client.Raw].
// A message that is not stored yields an [*APIError] with StatusCode 404.
func (c *Client) Message(ctx context.Context, id string) (Message, error) {
	var m Message
	err := c.do(ctx, http.MethodGet, "/api/messages/"+url.PathEscape(id), &m)
	return m, err
}

// Detail returns one message with its decoded content: text, HTML, links,
// headers and attachments.
func (c *Client) Detail(ctx context.Context, id string) (Detail, error) {
	var d Detail
	err := c.do(ctx, http.MethodGet, "/api/messages/"+url.PathEscape(id), &d)
	return d, err
}

// Delete deletes one stored message; the counters are kept. A message that
// is not stored yields an [*APIError] with StatusCode 404.
func (c *Client) Delete(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/messages/"+url.PathEscape(id), nil)
}

// Raw returns the bytes of a message exactly as received.
func (c *Client) Raw(ctx context.Context, id string) ([]byte, error) {
	var b []byte
	err := c.do(ctx, http.MethodGet, "/api/messages/"+url.PathEscape(id)+"/raw", &b)
	return b, err
}

// Stats returns the sink's counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := c.do(ctx, http.MethodGet, "/api/stats", &s)
	return s, err
}

// Reports returns the bounce and complaint reports the sink generated,
// newest first, without their raw bytes.
func (c *Client) Reports(ctx context.Context) ([]Report, error) {
	var rs []Report
	err := c.do(ctx, http.MethodGet, "/api/reports", &rs)
	return rs, err
}

// Reset deletes every stored message and zeroes the counters.
func (c *Client) Reset(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "/api/messages", nil)
}

// CloseIdleConnections closes the client's idle keep-alive connections.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// do sends a request and decodes a JSON response into out; a *[]byte out
// receives the body as is.
func (c *Client) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return fmt.Errorf("smtpsink: %s %s: %w", method, path, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("smtpsink: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e apiError
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		p, _, _ := strings.Cut(path, "?")
		return &APIError{Method: method, Path: p, StatusCode: resp.StatusCode, Message: e.Error}
	}
	switch out := out.(type) {
	case nil:
		_, err = io.Copy(io.Discard, resp.Body)
	case *[]byte:
		*out, err = io.ReadAll(resp.Body)
	default:
		err = json.NewDecoder(resp.Body).Decode(out)
	}
	if err != nil {
		return fmt.Errorf("smtpsink: %s %s: read response: %w", method, path, err)
	}
	return nil
}
