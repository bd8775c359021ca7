package guard

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/floodgate-dev/floodgate/queue"
)

func TestHandler(t *testing.T) {
	g, _, srv := newTestGuard(t, "", Config{DecisionSample: 1})
	admit(t, g, adm(queue.KindPasswordReset, "a@example.com", "s"))
	admit(t, g, adm(queue.KindPasswordReset, "a@example.com", "s"))
	ts := httptest.NewServer(g.Handler())
	defer ts.Close()

	do := apiCaller(t, ts.URL)

	code, m := do("GET", "/v1/stats", "")
	kinds, _ := m["kinds"].(map[string]any)
	reset, _ := kinds[queue.KindPasswordReset].(map[string]any)
	if code != 200 || reset["requested"] != 2.0 || reset["admitted"] != 1.0 {
		t.Errorf("GET /v1/stats = %d %v", code, m)
	}
	if code, m = do("POST", "/v1/suppressions", `{"address":"b@example.com","reason":"complaint"}`); code != 200 || m["suppressed"] != true {
		t.Errorf("POST = %d %v", code, m)
	}
	if code, m = do("GET", "/v1/suppressions?address=B%2Bx@Example.com", ""); code != 200 || m["suppressed"] != true {
		t.Errorf("GET one = %d %v", code, m)
	}
	if code, m = do("GET", "/v1/suppressions", ""); code != 200 || len(m["entries"].([]any)) != 1 || m["cursor"] != "0" {
		t.Errorf("GET list = %d %v", code, m)
	}
	if code, m = do("DELETE", "/v1/suppressions", `{"address":"b@example.com"}`); code != 200 || m["removed"] != true {
		t.Errorf("DELETE = %d %v", code, m)
	}
	if code, m = do("DELETE", "/v1/suppressions?address=b@example.com", ""); code != 200 || m["removed"] != false {
		t.Errorf("DELETE again = %d %v", code, m)
	}
	if code, _ = do("POST", "/v1/suppressions", `{"address":"nope"}`); code != 400 {
		t.Errorf("POST invalid = %d, want 400", code)
	}
	code, m = do("GET", "/v1/decisions?limit=10", "")
	ds, _ := m["decisions"].([]any)
	if code != 200 || len(ds) != 2 {
		t.Fatalf("GET /v1/decisions = %d %v", code, m)
	}
	if first := ds[0].(map[string]any); first["outcome"] != "duplicate" || first["rcpt_hash"] == "" || strings.Contains(first["rcpt_hash"].(string), "@") {
		t.Errorf("newest decision %v", first)
	}
	if code, _ = do("GET", "/v1/decisions?limit=0", ""); code != 400 {
		t.Errorf("limit=0: %d, want 400", code)
	}
	srv.Stop()
	if code, _ = do("GET", "/v1/stats", ""); code != 503 {
		t.Errorf("stats with Redis down = %d, want 503", code)
	}
}

// apiCaller returns a function that sends one request to the admin API at
// base and decodes its JSON answer.
func apiCaller(t *testing.T, base string) func(method, path, body string) (int, map[string]any) {
	return func(method, path, body string) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return resp.StatusCode, m
	}
}
