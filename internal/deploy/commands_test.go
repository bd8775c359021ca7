package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// envRead matches an environment variable read by name in Go source.
var envRead = regexp.MustCompile(`(?:Getenv|getenv|LookupEnv)\("([A-Z][A-Z0-9_]*)"\)`)

// Every command answers -h with its usage and exit status 0, and the usage
// names every environment variable the command's source reads.
func TestCommandsHelp(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join(root, "cmd", "*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no commands under cmd/: %v", err)
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(filepath.Separator), "./cmd/...")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", err, out)
	}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		src, err := commandSource(name)
		if err != nil {
			t.Error(err)
			continue
		}
		if strings.Contains(src, `"github.com/floodgate-dev/floodgate/internal/telemetry"`) {
			// The OTEL_* variables are read there, for the command.
			tel, err := packageSource("internal/telemetry")
			if err != nil {
				t.Fatal(err)
			}
			src += tel
		}
		var vars []string
		for _, m := range envRead.FindAllStringSubmatch(src, -1) {
			if !slices.Contains(vars, m[1]) {
				vars = append(vars, m[1])
			}
		}
		var out bytes.Buffer
		cmd := exec.Command(filepath.Join(bin, name), "-h")
		cmd.Stdout, cmd.Stderr = &out, &out
		// No variable set: the usage must not depend on the environment.
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
		err = cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) || err != nil {
			t.Errorf("%s -h: %v, want exit status 0\n%s", name, err, out.String())
			continue
		}
		usage := out.String()
		if !strings.Contains(usage, "usage: "+name) {
			t.Errorf("%s -h printed no usage line:\n%s", name, usage)
		}
		for _, v := range vars {
			if !strings.Contains(usage, v) {
				t.Errorf("%s reads %s, but its usage does not mention it:\n%s", name, v, usage)
			}
		}
	}
}

// packageSource returns the non-test Go source of the package in dir
// (relative to the module root).
func packageSource(dir string) (string, error) {
	files, err := filepath.Glob(filepath.Join(root, dir, "*.go"))
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("%s: no Go files", dir)
	}
	var b strings.Builder
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		b.Write(data)
	}
	return b.String(), nil
}
