package queue_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/redisproc"
	"github.com/floodgate-dev/floodgate/queue"
)

// redisAddr is the examples' Redis: a private redis-server that TestMain
// starts for this package and stops afterwards, so no example touches a
// Redis it did not start. In an application it is your Redis, e.g.
// "127.0.0.1:6379".
var redisAddr string

func TestMain(m *testing.M) {
	p, err := redisproc.Start(context.Background(), redisproc.Options{})
	if err != nil {
		// A missing redis-server fails the package rather than skipping
		// the examples.
		fmt.Fprintln(os.Stderr, "queue examples:", err)
		os.Exit(1)
	}
	redisAddr = p.Addr
	code := m.Run()
	p.Stop()
	os.Exit(code)
}

func ExampleClient_Enqueue() {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	// The guard decides at enqueue: dedup, per-recipient and per-source
	// caps, suppression, the surge breaker. Give it the workers' policy.
	g, err := guard.New(guard.Config{Redis: rdb, Policy: guard.DefaultPolicy()})
	if err != nil {
		panic(err)
	}
	client, err := queue.NewClient(queue.Config{Redis: rdb, Admitter: g, Kinds: g.Policy().Kinds()})
	if err != nil {
		panic(err)
	}
	defer client.Close()

	receipt, err := client.Enqueue(context.Background(), queue.Email{
		Kind:   queue.KindPasswordReset,
		To:     "alice@example.com",
		Name:   "Alice",
		Source: "203.0.113.7", // the client IP that asked: caps apply per source
		Data:   map[string]string{"reset_url": "https://app.example/reset/3f9a"},
	})
	if err != nil {
		// Invalid input (errors.Is(err, queue.ErrInvalid)) or Redis
		// unavailable (queue.ErrUnavailable): nothing was stored.
		panic(err)
	}
	fmt.Println(receipt.Kind, receipt.Outcome)
	// Output: password_reset queued
}

// A forgot-password handler answers every request the same way, whatever
// floodgate decided, so the page reveals neither whether the account exists
// nor whether the address is being flooded (OWASP Forgot Password
// guidance). The receipt goes to the application's own log.
func ExampleClient_Enqueue_uniformResponse() {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	g, err := guard.New(guard.Config{Redis: rdb})
	if err != nil {
		panic(err)
	}
	client, err := queue.NewClient(queue.Config{Redis: rdb, Admitter: g, Kinds: g.Policy().Kinds()})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	logger := slog.New(slog.DiscardHandler)

	forgot := func(w http.ResponseWriter, r *http.Request) {
		email := r.FormValue("email")
		if userExists(email) {
			receipt, err := client.Enqueue(r.Context(), queue.Email{
				Kind:   queue.KindPasswordReset,
				To:     email,
				Source: r.RemoteAddr,
				Data:   map[string]string{"reset_url": newResetURL(email)},
			})
			// Log the outcome (never the address); do not branch the reply on it.
			logger.Info("password reset", "outcome", receipt.Outcome, "reason", receipt.Reason, "err", err)
		}
		fmt.Fprintln(w, "If an account exists for that address, we have sent a link to reset its password.")
	}

	// Alice asks five times: the guard caps her resets (3/1h by default),
	// and the page still reads the same.
	for _, addr := range []string{"alice@example.com", "alice@example.com", "alice@example.com", "alice@example.com", "alice@example.com", "nobody@example.com", "not an address"} {
		req := httptest.NewRequest("POST", "/forgot", strings.NewReader(url.Values{"email": {addr}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		forgot(rec, req)
		fmt.Print(rec.Code, " ", rec.Body.String())
	}
	// Output:
	// 200 If an account exists for that address, we have sent a link to reset its password.
	// 200 If an account exists for that address, we have sent a link to reset its password.
	// 200 If an account exists for that address, we have sent a link to reset its password.
	// 200 If an account exists for that address, we have sent a link to reset its password.
	// 200 If an account exists for that address, we have sent a link to reset its password.
	// 200 If an account exists for that address, we have sent a link to reset its password.
	// 200 If an account exists for that address, we have sent a link to reset its password.
}

func userExists(email string) bool    { return email != "nobody@example.com" }
func newResetURL(email string) string { return "https://app.example/reset/3f9a" }

// A forgot-password handler tells the guard what it verified itself: here
// a device cookie it issued to the account at an earlier sign-in. While a
// flood keeps the reset breaker open, such requests keep a lane of their
// own, and the page reads the same either way. Never set Trust from
// anything the requester can simply claim.
func ExampleEmail_trust() {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	g, err := guard.New(guard.Config{Redis: rdb})
	if err != nil {
		panic(err)
	}
	client, err := queue.NewClient(queue.Config{Redis: rdb, Admitter: g, Kinds: g.Policy().Kinds()})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	// As during a flood.
	if _, err := g.Trip(context.Background(), queue.KindPasswordReset, ""); err != nil {
		panic(err)
	}
	defer g.Reset(context.Background(), queue.KindPasswordReset)

	forgot := func(w http.ResponseWriter, r *http.Request) {
		e := queue.Email{
			Kind:   queue.KindPasswordReset,
			To:     r.FormValue("email"),
			Source: r.RemoteAddr,
			Data:   map[string]string{"reset_url": "https://app.example/reset/7c1e"},
		}
		if c, err := r.Cookie("device"); err == nil && deviceKnown(e.To, c.Value) {
			e.Trust = queue.TrustDevice
		}
		receipt, err := client.Enqueue(r.Context(), e)
		fmt.Println("log:", receipt.Outcome, receipt.Reason, err) // the app's own log
		fmt.Fprintln(w, "If an account exists for that address, we have sent a link to reset its password.")
	}
	for _, c := range []struct{ addr, cookie string }{{"carol@example.com", "d-8c2f"}, {"dave@example.com", ""}} {
		req := httptest.NewRequest("POST", "/forgot", strings.NewReader(url.Values{"email": {c.addr}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if c.cookie != "" {
			req.AddCookie(&http.Cookie{Name: "device", Value: c.cookie})
		}
		rec := httptest.NewRecorder()
		forgot(rec, req)
		fmt.Print(rec.Code, " ", rec.Body.String())
	}
	// Output:
	// log: queued trusted <nil>
	// 200 If an account exists for that address, we have sent a link to reset its password.
	// log: held breaker <nil>
	// 200 If an account exists for that address, we have sent a link to reset its password.
}

// deviceKnown stands for the application's check of a device cookie it
// issued (signed, bound to the account, unexpired).
func deviceKnown(email, cookie string) bool {
	return email == "carol@example.com" && cookie == "d-8c2f"
}
