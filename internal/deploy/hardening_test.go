package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// ignorePatterns returns the patterns of an ignore file at the root.
func ignorePatterns(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, strings.TrimPrefix(line, "/"))
		}
	}
	return out
}

// hasPair reports whether args holds name immediately followed by value.
func hasPair(args []string, name, value string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == name && args[i+1] == value {
			return true
		}
	}
	return false
}

// Redis keeps what it holds across a restart and never evicts: an evicted
// cap lets a flood through and an evicted task is a lost email.
func TestComposeRedisDurable(t *testing.T) {
	r := loadCompose(t).Services["redis"]
	argv := r.argv()
	if !hasPair(argv, "--appendonly", "yes") {
		t.Errorf("redis runs %q, want --appendonly yes", argv)
	}
	if !hasPair(argv, "--maxmemory-policy", "noeviction") {
		t.Errorf("redis runs %q, want --maxmemory-policy noeviction", argv)
	}
	if !slices.ContainsFunc(r.Volumes, func(v volume) bool { return v.Target == "/data" }) {
		t.Errorf("redis volumes %v: the AOF in /data is not on a volume", r.Volumes)
	}
}

// The worker serves the admin API with a token that comes from an env file
// kept out of git and out of the image; an example of it is committed.
func TestComposeWorkerAdminToken(t *testing.T) {
	w := loadCompose(t).Services["worker"]
	_, args := binary(t, "worker", w)
	if fl := flags(t, args); !slices.Contains(fl["-admin"], "true") {
		t.Errorf("worker is not started with -admin=true (flags %q)", args)
	}
	if _, inline := w.Environment["FLOODGATE_ADMIN_TOKEN"]; inline {
		t.Error("worker sets FLOODGATE_ADMIN_TOKEN in docker-compose.yml; it belongs in its env file")
	}
	if len(w.EnvFile) == 0 {
		t.Fatal("worker has no env_file for its secrets")
	}
	gitignore, dockerignore := ignorePatterns(t, ".gitignore"), ignorePatterns(t, ".dockerignore")
	for _, f := range w.EnvFile {
		f = strings.TrimPrefix(f, "./")
		if !slices.Contains(gitignore, f) {
			t.Errorf("env file %s is not in .gitignore (%q)", f, gitignore)
		}
		if !slices.Contains(dockerignore, f) {
			t.Errorf("env file %s is not in .dockerignore (%q)", f, dockerignore)
		}
		example, err := os.ReadFile(filepath.Join(root, f+".example"))
		if err != nil {
			t.Errorf("no committed example of %s: %v", f, err)
			continue
		}
		if !regexp.MustCompile(`(?m)^FLOODGATE_ADMIN_TOKEN=$`).Match(example) {
			t.Errorf("%s.example does not list FLOODGATE_ADMIN_TOKEN= (empty)", f)
		}
	}

	// The documented one-time setup writes the env file with a token.
	dir := t.TempDir()
	cmd := exec.Command("/bin/sh", "-eu", "-c", setupScript(t))
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("setup commands failed: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, strings.TrimPrefix(w.EnvFile[0], "./")))
	if err != nil {
		t.Fatalf("the setup commands do not write %s: %v", w.EnvFile[0], err)
	}
	if !regexp.MustCompile(`(?m)^FLOODGATE_ADMIN_TOKEN=[0-9a-f]{64}$`).Match(b) {
		t.Errorf("%s written by the setup has no 256-bit token: %q", w.EnvFile[0], b)
	}
}

// Every image the stack pulls, in compose and in the Dockerfile, is pinned
// by digest, so a rebuild cannot silently change a base.
func TestImagesPinnedByDigest(t *testing.T) {
	for name, s := range loadCompose(t).Services {
		if s.built() {
			continue
		}
		if !digestRef.MatchString(s.Image) {
			t.Errorf("service %s image %q is not pinned by digest", name, s.Image)
		}
	}
	var stages []string
	for _, st := range loadDockerfile(t) {
		if !slices.Contains(stages, st.from) && !digestRef.MatchString(st.from) {
			t.Errorf("Dockerfile FROM %s is not pinned by digest", st.from)
		}
		if st.name != "" {
			stages = append(stages, st.name)
		}
	}
}
