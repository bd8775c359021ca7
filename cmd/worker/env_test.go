package main

import "os"

// testEnv gives the worker the two keys every floodgate process shares.
func testEnv(name string) string {
	switch name {
	case "FLOODGATE_HASH_KEY":
		return testHashKey
	case "FLOODGATE_PAYLOAD_KEYS":
		return testPayloadKeys
	}
	return ""
}

const (
	testHashKey     = "dGVzdCBoYXNoIGtleSBmb3IgZmxvb2RnYXRlIHRlc3Rz"
	testPayloadKeys = "t1:Zmxvb2RnYXRlIHRlc3QgcGF5bG9hZCBrZXkgMzIgYiE="
)

// keyEnv is the environment of a worker binary a test runs.
func keyEnv() []string {
	return append(os.Environ(), "FLOODGATE_HASH_KEY="+testHashKey, "FLOODGATE_PAYLOAD_KEYS="+testPayloadKeys)
}
