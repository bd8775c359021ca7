package guard

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/floodgate-dev/floodgate/queue"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	g, rc, _ := newTestGuard(t, "", Config{Registerer: reg})
	g2 := guardOn(t, rc, "", Config{Registerer: reg}) // a second guard shares the counter
	admit(t, g, adm(queue.KindPasswordReset, "m@example.com", "s"))
	admit(t, g2, adm(queue.KindPasswordReset, "M+x@example.com", "s"))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "floodgate_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[labels(m)] = m.GetCounter().GetValue()
			for _, l := range m.GetLabel() {
				if l.GetName() != "kind" && l.GetName() != "outcome" && l.GetName() != "reason" {
					t.Errorf("unexpected label %q", l.GetName())
				}
			}
		}
	}
	if got["password_reset/queued/"] != 1 || got["password_reset/duplicate/"] != 1 {
		t.Errorf("floodgate_decisions_total = %v", got)
	}
}

func labels(m *dto.Metric) string {
	v := map[string]string{}
	for _, l := range m.GetLabel() {
		v[l.GetName()] = l.GetValue()
	}
	return v["kind"] + "/" + v["outcome"] + "/" + v["reason"]
}
