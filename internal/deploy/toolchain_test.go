package deploy

import (
	"go/version"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// goMod returns the go and toolchain lines of go.mod.
func goMod(t *testing.T) (goLine, toolchain string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "go":
			goLine = "go" + f[1]
		case len(f) == 2 && f[0] == "toolchain":
			toolchain = f[1]
		}
	}
	return goLine, toolchain
}

var digestRef = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)

// The toolchain that builds releases is go.mod's toolchain line: the Docker
// image builds with it and .ci/run builds and vets with it, besides the
// machine's Go running the tests.
func TestToolchain(t *testing.T) {
	goLine, toolchain := goMod(t)
	if !version.IsValid(goLine) || !version.IsValid(toolchain) {
		t.Fatalf("go.mod: go %q, toolchain %q; want both set", goLine, toolchain)
	}
	if version.Compare(toolchain, goLine) <= 0 {
		t.Errorf("go.mod toolchain %s is not newer than its go line %s", toolchain, goLine)
	}

	build := loadDockerfile(t)[0]
	if !digestRef.MatchString(build.from) {
		t.Errorf("build stage FROM %s is not pinned by digest", build.from)
	}
	// The image's Go, unless GOTOOLCHAIN names another.
	tag, _, _ := strings.Cut(strings.TrimPrefix(build.from, "golang:"), "@")
	tag, _, _ = strings.Cut(tag, "-")
	used := "go" + tag
	for _, in := range build.ins {
		if in[0] != "ENV" {
			continue
		}
		for _, kv := range in[1:] {
			if v, ok := strings.CutPrefix(kv, "GOTOOLCHAIN="); ok {
				used = v
			}
		}
	}
	if used != toolchain {
		t.Errorf("the Docker image builds with %s, want go.mod's toolchain %s", used, toolchain)
	}

	ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"build", "vet"} {
		want := "GOTOOLCHAIN=" + toolchain + " go " + cmd + " ./..."
		if !strings.Contains(string(ci), want) {
			t.Errorf(".ci/run does not run %q", want)
		}
	}
}
