package deploy

import (
	"bufio"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// root is the repository root, relative to this package's directory (where
// go test runs).
var root = filepath.Join("..", "..")

// Flags each command may be given in docker-compose.yml. A flag outside the
// list is a typo or a flag the command does not have, and the container
// would exit at start-up.
var knownFlags = map[string][]string{
	"worker":   {"-redis", "-smtp", "-smtp-tls", "-http", "-dkim-domain", "-dkim-key", "-policy", "-concurrency", "-admin"},
	"smtpsink": {"-smtp", "-http", "-dkim-keys", "-max-messages"},
}

// composeFile is the part of the Compose file format the stack uses.
type composeFile struct {
	Services map[string]service `yaml:"services"`
}

type service struct {
	Image       string       `yaml:"image"`
	Build       yaml.Node    `yaml:"build"`
	Entrypoint  execForm     `yaml:"entrypoint"`
	Command     execForm     `yaml:"command"`
	Environment environment  `yaml:"environment"`
	EnvFile     envFiles     `yaml:"env_file"`
	Ports       []port       `yaml:"ports"`
	Volumes     []volume     `yaml:"volumes"`
	DependsOn   dependsOn    `yaml:"depends_on"`
	Healthcheck *healthcheck `yaml:"healthcheck"`
}

// built reports whether the service is built from this repository.
func (s service) built() bool { return !s.Build.IsZero() }

// argv returns the process the container runs: entrypoint then command.
func (s service) argv() []string { return append(slices.Clone(s.Entrypoint), s.Command...) }

type healthcheck struct {
	Test    execForm `yaml:"test"`
	Disable bool     `yaml:"disable"`
}

// execForm is a list-form command. The shell-string form is refused: it needs
// a shell, which the distroless image does not have.
type execForm []string

func (e *execForm) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return fmt.Errorf("line %d: %q must be a list (exec form), not a shell string", n.Line, n.Value)
	}
	var s []string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*e = s
	return nil
}

// environment accepts both the map and the KEY=VALUE list forms.
type environment map[string]string

func (e *environment) UnmarshalYAML(n *yaml.Node) error {
	m := map[string]string{}
	switch n.Kind {
	case yaml.MappingNode:
		if err := n.Decode(&m); err != nil {
			return err
		}
	case yaml.SequenceNode:
		var list []string
		if err := n.Decode(&list); err != nil {
			return err
		}
		for _, kv := range list {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
	default:
		return fmt.Errorf("line %d: environment must be a map or a list", n.Line)
	}
	*e = m
	return nil
}

// envFiles accepts env_file as one path or a list of paths.
type envFiles []string

func (e *envFiles) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*e = []string{n.Value}
		return nil
	case yaml.SequenceNode:
		var list []string
		if err := n.Decode(&list); err != nil {
			return err
		}
		*e = list
		return nil
	}
	return fmt.Errorf("line %d: env_file must be a path or a list of paths", n.Line)
}

// dependsOn accepts the list form (condition service_started) and the map
// form.
type dependsOn map[string]string

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	m := map[string]string{}
	switch n.Kind {
	case yaml.SequenceNode:
		var list []string
		if err := n.Decode(&list); err != nil {
			return err
		}
		for _, s := range list {
			m[s] = "service_started"
		}
	case yaml.MappingNode:
		var long map[string]struct {
			Condition string `yaml:"condition"`
		}
		if err := n.Decode(&long); err != nil {
			return err
		}
		for s, c := range long {
			if c.Condition == "" {
				c.Condition = "service_started"
			}
			m[s] = c.Condition
		}
	default:
		return fmt.Errorf("line %d: depends_on must be a list or a map", n.Line)
	}
	*d = m
	return nil
}

// port is one published port, from either the short syntax
// ("127.0.0.1:8080:8080") or the long one.
type port struct {
	HostIP    string `yaml:"host_ip"`
	Published string `yaml:"published"`
	Target    string `yaml:"target"`
	raw       string
}

func (p *port) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		type plain port
		var q plain
		if err := n.Decode(&q); err != nil {
			return err
		}
		*p = port(q)
		p.raw = fmt.Sprintf("line %d", n.Line)
		return nil
	}
	p.raw = n.Value
	spec, _, _ := strings.Cut(n.Value, "/") // drop "/tcp"
	parts := strings.Split(spec, ":")
	switch len(parts) {
	case 1:
		p.Target = parts[0]
	case 2:
		p.Published, p.Target = parts[0], parts[1]
	default:
		// An IPv6 host address is bracketed and contains colons itself.
		p.Target = parts[len(parts)-1]
		p.Published = parts[len(parts)-2]
		p.HostIP = strings.Trim(strings.Join(parts[:len(parts)-2], ":"), "[]")
	}
	return nil
}

// volume is a short-syntax mount, "source:target[:mode]".
type volume struct {
	Source, Target string
}

func (v *volume) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: use the short volume syntax", n.Line)
	}
	parts := strings.Split(n.Value, ":")
	if len(parts) < 2 {
		return fmt.Errorf("line %d: volume %q has no target", n.Line, n.Value)
	}
	v.Source, v.Target = parts[0], parts[1]
	return nil
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

// flags returns the -name=value or -name value flags of args, skipping the
// binary. Every flag the stack passes takes a value.
func flags(t *testing.T, args []string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			t.Errorf("argument %q of %q is not a flag", a, args)
			continue
		}
		name, value, ok := strings.Cut(a, "=")
		name = "-" + strings.TrimLeft(name, "-")
		if !ok {
			if i+1 >= len(args) {
				t.Errorf("flag %s of %q has no value", name, args)
				break
			}
			i++
			value = args[i]
		}
		out[name] = append(out[name], value)
	}
	return out
}

// binary returns the command a built service runs, as the cmd/<name>
// directory it comes from.
func binary(t *testing.T, name string, s service) (string, []string) {
	t.Helper()
	argv := s.argv()
	if len(argv) == 0 {
		t.Fatalf("service %s: no entrypoint or command; the image default is not pinned", name)
	}
	return path.Base(argv[0]), argv[1:]
}

// commandSource returns the non-test Go source of cmd/<bin>, concatenated.
func commandSource(bin string) (string, error) {
	files, err := filepath.Glob(filepath.Join(root, "cmd", bin, "*.go"))
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("cmd/%s: no Go files", bin)
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

func TestComposeServices(t *testing.T) {
	c := loadCompose(t)
	for _, name := range []string{"redis", "smtpsink", "worker"} {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("docker-compose.yml has no %s service (has %v)", name, slices.Sorted(maps.Keys(c.Services)))
		}
	}
	if img := c.Services["redis"].Image; !strings.HasPrefix(img, "redis:7-alpine@") {
		t.Errorf("redis image = %q, want redis:7-alpine pinned by digest", img)
	}
	for name, s := range c.Services {
		if s.Healthcheck == nil || s.Healthcheck.Disable || len(s.Healthcheck.Test) < 2 {
			t.Errorf("service %s: no healthcheck", name)
		}
	}
	if h := c.Services["redis"].Healthcheck; h != nil && !slices.Contains(h.Test, "redis-cli") {
		t.Errorf("redis healthcheck = %q, want a redis-cli ping", h.Test)
	}

	want := map[string]string{"redis": "service_healthy", "smtpsink": "service_healthy"}
	got := c.Services["worker"].DependsOn
	for dep, cond := range want {
		if got[dep] != cond {
			t.Errorf("worker depends_on %s: condition = %q, want %q", dep, got[dep], cond)
		}
	}
}

func TestComposeCommandsExist(t *testing.T) {
	c := loadCompose(t)
	for name, s := range c.Services {
		if !s.built() {
			continue
		}
		bin, _ := binary(t, name, s)
		dir := filepath.Join(root, "cmd", bin)
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Errorf("service %s runs %s, but cmd/%s: %v", name, bin, bin, err)
			continue
		}
		if !slices.ContainsFunc(entries, func(e os.DirEntry) bool {
			return strings.HasSuffix(e.Name(), ".go") && !strings.HasSuffix(e.Name(), "_test.go")
		}) {
			t.Errorf("service %s runs %s, but cmd/%s has no Go source", name, bin, bin)
		}
		if argv0 := s.argv()[0]; argv0 != "/usr/local/bin/"+bin {
			t.Errorf("service %s runs %q, want the image's /usr/local/bin/%s", name, argv0, bin)
		}
	}
}

func TestComposePortsLoopbackOnly(t *testing.T) {
	c := loadCompose(t)
	for name, s := range c.Services {
		for _, p := range s.Ports {
			if p.HostIP != "127.0.0.1" {
				t.Errorf("service %s publishes %s on host address %q, want 127.0.0.1", name, p.raw, p.HostIP)
			}
			if p.Published == "" {
				t.Errorf("service %s publishes %s on a random host port, want a fixed one", name, p.raw)
			}
		}
	}
}

func TestComposeFlags(t *testing.T) {
	c := loadCompose(t)
	for name, s := range c.Services {
		if !s.built() {
			continue
		}
		bin, args := binary(t, name, s)
		known, ok := knownFlags[bin]
		if !ok {
			continue // a command with no flags to check, e.g. enqueue
		}
		fl := flags(t, args)
		src, srcErr := commandSource(bin)
		for f := range fl {
			if !slices.Contains(known, f) {
				t.Errorf("service %s passes %s, which is not a %s flag (known: %v)", name, f, bin, known)
			}
			// The flag's name as a string literal in cmd/<bin>: a loose
			// check that the command still defines it.
			if srcErr == nil && !strings.Contains(src, `"`+strings.TrimPrefix(f, "-")+`"`) {
				t.Errorf("service %s passes %s, but cmd/%s does not mention %q", name, f, bin, strings.TrimPrefix(f, "-"))
			}
		}

		// Whatever a container listens on must be reachable: 0.0.0.0, not
		// loopback, and every published port must be one it listens on.
		listening := map[string]bool{}
		for _, f := range []string{"-smtp", "-http"} {
			if bin == "worker" && f == "-smtp" {
				continue // the worker's -smtp is the relay it dials
			}
			for _, addr := range fl[f] {
				host, p, err := net.SplitHostPort(addr)
				if err != nil {
					t.Errorf("service %s: %s %q: %v", name, f, addr, err)
					continue
				}
				if host != "0.0.0.0" {
					t.Errorf("service %s: %s %q listens on %q; inside a container it must be 0.0.0.0", name, f, addr, host)
				}
				listening[p] = true
			}
		}
		for _, p := range s.Ports {
			if !listening[p.Target] {
				t.Errorf("service %s publishes container port %s, which no -smtp/-http flag listens on", name, p.Target)
			}
		}
	}
}

func TestComposeWorkerWiring(t *testing.T) {
	c := loadCompose(t)
	w := c.Services["worker"]
	_, args := binary(t, "worker", w)
	fl := flags(t, args)
	for _, f := range []string{"-redis", "-smtp", "-smtp-tls", "-http", "-dkim-domain", "-dkim-key"} {
		if len(fl[f]) == 0 {
			t.Errorf("worker is not given %s", f)
		}
	}

	for _, raw := range fl["-redis"] {
		u, err := url.Parse(raw)
		if err != nil {
			t.Errorf("worker -redis %q: %v", raw, err)
			continue
		}
		if u.Scheme != "redis" || u.Hostname() != "redis" || u.Port() != "6379" {
			t.Errorf("worker -redis = %q, want redis://redis:6379 (the redis service)", raw)
		}
	}

	// The relay must be the sink's SMTP listener.
	_, sinkArgs := binary(t, "smtpsink", c.Services["smtpsink"])
	sinkFlags := flags(t, sinkArgs)
	for _, relay := range fl["-smtp"] {
		host, p, err := net.SplitHostPort(relay)
		if err != nil {
			t.Errorf("worker -smtp %q: %v", relay, err)
			continue
		}
		if host != "smtpsink" {
			t.Errorf("worker -smtp = %q, want the smtpsink service", relay)
		}
		if !slices.ContainsFunc(sinkFlags["-smtp"], func(a string) bool { return strings.HasSuffix(a, ":"+p) }) {
			t.Errorf("worker -smtp = %q, but smtpsink listens on %q", relay, sinkFlags["-smtp"])
		}
	}

	// A plain-text relay off loopback must be acknowledged explicitly.
	if slices.Contains(fl["-smtp-tls"], "none") && w.Environment["FLOODGATE_ALLOW_INSECURE_SMTP"] != "1" {
		t.Errorf("worker uses -smtp-tls none with a non-loopback relay but FLOODGATE_ALLOW_INSECURE_SMTP is %q, want \"1\"",
			w.Environment["FLOODGATE_ALLOW_INSECURE_SMTP"])
	}

	// The healthcheck probes /healthz on the -http port.
	if len(fl["-http"]) == 1 && w.Healthcheck != nil {
		_, p, _ := net.SplitHostPort(fl["-http"][0])
		want := "http://127.0.0.1:" + p + "/healthz"
		if !slices.Contains(w.Healthcheck.Test, want) {
			t.Errorf("worker healthcheck = %q, want it to fetch %s", w.Healthcheck.Test, want)
		}
	}

	// Files named by flags must be inside a mounted volume.
	files := map[string][]string{"worker": nil, "smtpsink": sinkFlags["-dkim-keys"]}
	for _, k := range fl["-dkim-key"] {
		sel, file, ok := strings.Cut(k, "=")
		if !ok || sel == "" {
			t.Errorf("worker -dkim-key %q, want SELECTOR=PEMFILE", k)
			continue
		}
		files["worker"] = append(files["worker"], file)
	}
	files["worker"] = append(files["worker"], fl["-policy"]...)
	for name, paths := range files {
		for _, p := range paths {
			if !slices.ContainsFunc(c.Services[name].Volumes, func(v volume) bool {
				return strings.HasPrefix(p, strings.TrimSuffix(v.Target, "/")+"/")
			}) {
				t.Errorf("service %s reads %s, which is in none of its volumes %v", name, p, c.Services[name].Volumes)
			}
		}
	}
}

// dockerfile is a parsed Dockerfile: its stages, each a list of
// instructions with continuation lines joined and comments dropped.
type stage struct {
	from string
	name string
	ins  [][]string // instruction words, e.g. {"COPY", "--from=build", "/out/worker", "/usr/local/bin/"}
}

func loadDockerfile(t *testing.T) []stage {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []stage
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		words := strings.Fields(cur.String())
		cur.Reset()
		words[0] = strings.ToUpper(words[0])
		if words[0] == "FROM" {
			st := stage{from: words[1]}
			if len(words) == 4 && strings.EqualFold(words[2], "AS") {
				st.name = words[3]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("Dockerfile: %s before FROM", words[0])
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, words)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a multi-stage build", len(stages))
	}
	return stages
}

func TestDockerfile(t *testing.T) {
	stages := loadDockerfile(t)
	build := stages[0]
	final := stages[len(stages)-1]
	if !strings.HasPrefix(build.from, "golang:") {
		t.Errorf("build stage FROM %s, want the official golang image", build.from)
	}
	if !strings.Contains(final.from, "distroless/static") && !strings.Contains(final.from, "debian") {
		t.Errorf("final stage FROM %s, want distroless/static or debian-slim", final.from)
	}

	// The build stage compiles static binaries of the cmd packages.
	var cgoOff bool
	built := map[string]bool{}
	for _, in := range build.ins {
		if in[0] == "ENV" && slices.Contains(in, "CGO_ENABLED=0") {
			cgoOff = true
		}
		if in[0] != "RUN" {
			continue
		}
		if i := slices.Index(in, "build"); i > 0 && in[i-1] == "go" {
			if slices.Contains(in[:i], "CGO_ENABLED=0") {
				cgoOff = true
			}
			for _, w := range in[i+1:] {
				if p, ok := strings.CutPrefix(path.Clean(w), "cmd/"); ok {
					built[p] = true
				}
			}
		}
	}
	if !cgoOff {
		t.Errorf("Dockerfile does not set CGO_ENABLED=0 for go build")
	}

	// The final stage copies the binaries to /usr/local/bin and drops root.
	installed := map[string]bool{}
	var user string
	for _, in := range final.ins {
		switch in[0] {
		case "USER":
			user = in[1]
		case "COPY":
			if len(in) < 3 || !strings.HasPrefix(in[1], "--from=") {
				continue
			}
			srcs, dst := in[2:len(in)-1], in[len(in)-1]
			for _, s := range srcs {
				switch {
				case strings.HasSuffix(dst, "/"):
					installed[path.Join(dst, path.Base(s))] = true
				default:
					installed[dst] = true
				}
			}
		}
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("final stage runs as %q, want a non-root USER", user)
	}

	for _, cmd := range []string{"worker", "enqueue", "smtpsink", "floodctl"} {
		if !built[cmd] {
			t.Errorf("Dockerfile does not build ./cmd/%s (builds %v)", cmd, slices.Sorted(maps.Keys(built)))
		}
		if _, err := os.Stat(filepath.Join(root, "cmd", cmd)); err != nil {
			t.Errorf("Dockerfile builds ./cmd/%s: %v", cmd, err)
		}
		if !installed["/usr/local/bin/"+cmd] {
			t.Errorf("the final image has no /usr/local/bin/%s (has %v)", cmd, slices.Sorted(maps.Keys(installed)))
		}
	}

	// Every binary a compose service runs, healthchecks included, is one
	// the image has.
	c := loadCompose(t)
	for name, s := range c.Services {
		if !s.built() {
			continue
		}
		bin, _ := binary(t, name, s)
		if !built[bin] {
			t.Errorf("service %s runs %s, which the Dockerfile does not build", name, bin)
		}
		for _, argv0 := range []string{s.argv()[0], healthBinary(s)} {
			if argv0 != "" && !installed[argv0] {
				t.Errorf("service %s runs %s, which the final image does not contain (has %v)", name, argv0, slices.Sorted(maps.Keys(installed)))
			}
		}
	}
}

// healthBinary returns the program a CMD healthcheck runs.
func healthBinary(s service) string {
	if s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 || s.Healthcheck.Test[0] != "CMD" {
		return ""
	}
	return s.Healthcheck.Test[1]
}

func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, strings.TrimSuffix(line, "/"))
		}
	}
	// The DKIM private keys the stack mounts must never enter the build
	// context, or a COPY . . bakes them into a layer.
	c := loadCompose(t)
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			if !strings.HasPrefix(v.Source, "./") {
				continue
			}
			src := strings.TrimPrefix(v.Source, "./")
			if !slices.Contains(patterns, src) {
				t.Errorf("service %s mounts %s, which .dockerignore does not exclude (patterns %q)", name, v.Source, patterns)
			}
		}
	}
	for _, want := range []string{".git", "**/*.pem"} {
		if !slices.Contains(patterns, want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}
