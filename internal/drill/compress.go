package drill

import (
	"reflect"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
)

// logResolution is the resolution of the guard's recipient logs (dedup,
// per-recipient caps, the re-request age): compressed windows shorter than
// it would round to nothing.
const logResolution = time.Second

// compress returns a copy of p with every duration divided by speed, so
// that a drill lives a simulated hour in an hour/speed: rates keep their
// counts over shorter periods, windows, cooldowns, TTLs and the learning
// horizon shrink alike. Windows kept in the recipient logs stay at least
// logResolution long (they then cover more simulated time than the
// policy's, which only favours caps over the attack).
func compress(p *guard.Policy, speed float64) *guard.Policy {
	out := clonePolicy(p)
	if speed == 1 {
		return out
	}
	scaleDurations(reflect.ValueOf(out).Elem(), speed)
	for name, k := range out.KindPolicies {
		if k.DedupWindow > 0 {
			k.DedupWindow = max(k.DedupWindow, logResolution)
		}
		for i := range k.PerRecipient {
			k.PerRecipient[i].Per = max(k.PerRecipient[i].Per, logResolution)
		}
		if k.Breaker.Lanes.RerequestAfter > 0 {
			k.Breaker.Lanes.RerequestAfter = max(k.Breaker.Lanes.RerequestAfter, logResolution)
		}
		out.KindPolicies[name] = k
	}
	return out
}

// clonePolicy deep-copies the maps and slices of p.
func clonePolicy(p *guard.Policy) *guard.Policy {
	v := reflect.New(reflect.TypeOf(*p))
	v.Elem().Set(deepCopy(reflect.ValueOf(*p)))
	return v.Interface().(*guard.Policy)
}

func deepCopy(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		m := reflect.MakeMapWithSize(v.Type(), v.Len())
		for it := v.MapRange(); it.Next(); {
			m.SetMapIndex(it.Key(), deepCopy(it.Value()))
		}
		return m
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			s.Index(i).Set(deepCopy(v.Index(i)))
		}
		return s
	case reflect.Struct:
		s := reflect.New(v.Type()).Elem()
		s.Set(v)
		for i := range v.NumField() {
			if s.Field(i).CanSet() {
				s.Field(i).Set(deepCopy(v.Field(i)))
			}
		}
		return s
	}
	return v
}

var durationType = reflect.TypeOf(time.Duration(0))

// scaleDurations divides every time.Duration reachable from v by speed,
// keeping positive ones at least a millisecond.
func scaleDurations(v reflect.Value, speed float64) {
	switch v.Kind() {
	case reflect.Int64:
		if v.Type() == durationType && v.CanSet() && v.Int() > 0 {
			v.SetInt(int64(max(time.Duration(float64(v.Int())/speed), time.Millisecond)))
		}
	case reflect.Struct:
		for i := range v.NumField() {
			scaleDurations(v.Field(i), speed)
		}
	case reflect.Slice:
		for i := range v.Len() {
			scaleDurations(v.Index(i), speed)
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			e := reflect.New(it.Value().Type()).Elem()
			e.Set(it.Value())
			scaleDurations(e, speed)
			v.SetMapIndex(it.Key(), e)
		}
	case reflect.Pointer:
		if !v.IsNil() {
			scaleDurations(v.Elem(), speed)
		}
	}
}
