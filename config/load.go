package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every environment override.
const EnvPrefix = "KEYBRIDGE_"

// Problems is every problem found in a config; it prints one per line.
type Problems []error

func (p Problems) Error() string {
	lines := make([]string, len(p))
	for i, e := range p {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.Is and errors.As see each problem.
func (p Problems) Unwrap() []error { return p }

// Load reads the YAML file at path (which may be empty: defaults plus
// environment only), expands ${VAR}, applies KEYBRIDGE_* overrides, reads
// secret files and validates. Every problem is reported at once.
func Load(path string) (*Config, error) {
	var data []byte
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		data = b
	}
	return Parse(data, os.LookupEnv)
}

// Parse is Load without the file system and with an injectable environment.
func Parse(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	cfg := Default()
	var problems Problems
	if len(bytes.TrimSpace(data)) > 0 {
		var root yaml.Node
		if err := yaml.Unmarshal(data, &root); err != nil {
			return nil, Problems{fmt.Errorf("config is not valid YAML: %w", err)}
		}
		if len(root.Content) > 0 {
			problems = append(problems, unknownKeys(root.Content[0], reflect.TypeOf(cfg), "")...)
			// Decode leniently: unknown keys were collected above, so every
			// other problem can be reported in the same pass.
			if err := root.Content[0].Decode(&cfg); err != nil {
				problems = append(problems, fmt.Errorf("config: %w", err))
			}
		}
	}
	problems = append(problems, expandVars(reflect.ValueOf(&cfg).Elem(), "", lookup)...)
	problems = append(problems, applyEnv(reflect.ValueOf(&cfg).Elem(), "", lookup)...)
	problems = append(problems, readSecretFiles(&cfg)...)
	problems = append(problems, cfg.Validate()...)
	if len(problems) > 0 {
		return &cfg, problems
	}
	return &cfg, nil
}

// unknownKeys walks the YAML mapping against the struct's yaml tags, so a
// typo is reported with its full path and the nearest known key.
func unknownKeys(n *yaml.Node, t reflect.Type, path string) []error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var errs []error
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			f, ok := fields[key]
			if !ok {
				names := make([]string, 0, len(fields))
				for k := range fields {
					names = append(names, k)
				}
				sort.Strings(names)
				hint := "remove it"
				if s := nearest(key, names); s != "" {
					hint = fmt.Sprintf("did you mean %q?", s)
				}
				errs = append(errs, fmt.Errorf("%s: unknown key (line %d): %s", join(path, key), n.Content[i].Line, hint))
				continue
			}
			errs = append(errs, unknownKeys(n.Content[i+1], f.Type, join(path, key))...)
		}
	case (t.Kind() == reflect.Slice) && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			errs = append(errs, unknownKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = append(errs, unknownKeys(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))...)
		}
	}
	return errs
}

func yamlFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// nearest returns the candidate within edit distance 2 of s, if any.
func nearest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := distance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var varRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandVars replaces ${VAR} in every string after decoding, so a value
// can never inject YAML structure.
func expandVars(v reflect.Value, path string, lookup func(string) (string, bool)) []error {
	var errs []error
	switch v.Kind() {
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < v.NumField(); i++ {
			if !t.Field(i).IsExported() {
				continue
			}
			name := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			errs = append(errs, expandVars(v.Field(i), join(path, name), lookup)...)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			errs = append(errs, expandVars(v.Index(i), fmt.Sprintf("%s[%d]", path, i), lookup)...)
		}
	case reflect.Pointer:
		if !v.IsNil() {
			errs = append(errs, expandVars(v.Elem(), path, lookup)...)
		}
	case reflect.String:
		s := v.String()
		if !strings.Contains(s, "${") {
			return nil
		}
		out := varRef.ReplaceAllStringFunc(s, func(m string) string {
			name := m[2 : len(m)-1]
			val, ok := lookup(name)
			if !ok {
				errs = append(errs, fmt.Errorf("%s: environment variable %s is not set: export it or remove the reference", path, name))
			}
			return val
		})
		if v.CanSet() {
			v.SetString(out)
		}
	}
	return errs
}

var durationType = reflect.TypeOf(time.Duration(0))

// EnvName is the environment variable that overrides a config key:
// keycloak.client_secret is KEYBRIDGE_KEYCLOAK_CLIENT_SECRET.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// applyEnv sets every scalar leaf from KEYBRIDGE_<PATH> when that variable is set.
func applyEnv(v reflect.Value, path string, lookup func(string) (string, bool)) []error {
	var errs []error
	if v.Kind() == reflect.Struct {
		t := v.Type()
		for i := 0; i < v.NumField(); i++ {
			if !t.Field(i).IsExported() {
				continue
			}
			name := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			errs = append(errs, applyEnv(v.Field(i), join(path, name), lookup)...)
		}
		return errs
	}
	env := EnvName(path)
	raw, ok := lookup(env)
	if !ok {
		return nil
	}
	fail := func(err error) []error {
		return []error{fmt.Errorf("%s (from %s): %w", path, env, err)}
	}
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fail(fmt.Errorf("not a duration such as 30s or 5m: %w", err))
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(raw)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fail(errors.New("not a boolean: use true or false"))
		}
		v.SetBool(b)
	case v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fail(errors.New("not an integer"))
		}
		v.SetInt(n)
	case v.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fail(errors.New("not a number"))
		}
		v.SetFloat(f)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		var parts []string
		for _, p := range strings.Split(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		// Lists of objects and maps (rules, routes, clients) have no one-line
		// form: say so instead of ignoring the variable.
		return fail(errors.New("this key cannot be set from the environment: write it in the YAML, using ${VAR} for the parts that vary"))
	}
	return nil
}

func readSecretFiles(c *Config) []error {
	var errs []error
	read := func(key, file string, dst *string) {
		if file == "" {
			return
		}
		// Two sources for one secret: neither silently wins, since a secret
		// rotated in the one that loses would have no effect.
		if *dst != "" {
			secretKey := strings.TrimSuffix(key, "_file")
			errs = append(errs, fmt.Errorf("%s: set both directly (or by %s) and by file: keep one", secretKey, EnvName(secretKey)))
			return
		}
		b, err := os.ReadFile(file)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: cannot read secret file: %w", key, err))
			return
		}
		*dst = strings.TrimSpace(string(b))
	}
	read("keycloak.client_secret_file", c.Keycloak.ClientSecretFile, &c.Keycloak.ClientSecret)
	read("webhook.secret_file", c.Webhook.SecretFile, &c.Webhook.Secret)
	return errs
}
