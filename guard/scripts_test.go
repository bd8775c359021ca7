package guard

import (
	"context"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden scripts under testdata/scripts")

// TestScriptsGolden keeps the Lua that the default policy's kinds run under
// review: testdata/scripts/<kind>.<script>.lua, refreshed with -update.
// Every script must also load into a real Redis (it compiles).
func TestScriptsGolden(t *testing.T) {
	srv := testutil.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	pol := DefaultPolicy()
	for _, kind := range slices.Sorted(maps.Keys(pol.KindPolicies)) {
		kp := pol.KindPolicies[kind]
		ac := admitConfig(kind, kp, DefaultDecisionLogLen, DefaultTraceNewPerMinute)
		for name, lua := range map[string]string{
			"admit":    rkeys.AdmitLua(ac),
			"dispatch": rkeys.DispatchLua(kind, ac.Breaker),
			"settle":   rkeys.SettleLua(kind, ac.Breaker),
			"feedback": rkeys.FeedbackLua(kind, DefaultDecisionLogLen, ac.Breaker),
			"bounces":  rkeys.BounceTripLua(kind, ac.Breaker),
			"control":  rkeys.ControlLua(kind, ac.Breaker),
			"release":  rkeys.ReleaseLua(ac),
			"sweep":    rkeys.SweepLua(kind, ac.Breaker),
		} {
			if err := rc.ScriptLoad(context.Background(), lua).Err(); err != nil {
				t.Errorf("%s %s does not load: %v", kind, name, err)
			}
			path := filepath.Join("testdata", "scripts", kind+"."+name+".lua")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(lua), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./guard -run TestScriptsGolden -update)", err)
			}
			if string(want) != lua {
				t.Errorf("%s: the rendered script differs from the golden file (review, then -update)", path)
			}
		}
	}
}
