// Package scripts_test checks the shell scripts make test relies on, with a
// stand-in for the go command so each outcome of a fuzz run can be staged.
package scripts_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeGo answers "go test -fuzz" as $FAKE_FUZZ says and a corpus replay
// ("go test -run") with $FAKE_REPLAY as its exit code.
const fakeGo = `#!/usr/bin/env bash
case " $* " in
*" -fuzz="*)
    case "$FAKE_FUZZ" in
    pass) echo "fuzz: elapsed: 10s, execs: 5209 (553/sec)"; echo ok; exit 0 ;;
    race) printf -- '--- FAIL: FuzzFake (11.04s)\n    context deadline exceeded\nFAIL\nexit status 1\n'; exit 1 ;;
    silent-write)
      mkdir -p x/testdata/fuzz/FuzzFake && echo "go test fuzz v1" > x/testdata/fuzz/FuzzFake/abc
      printf -- '--- FAIL: FuzzFake (11.04s)\n    context deadline exceeded\nFAIL\n'; exit 1 ;;
    crash)
      mkdir -p x/testdata/fuzz/FuzzFake && echo "go test fuzz v1" > x/testdata/fuzz/FuzzFake/def
      printf -- '--- FAIL: FuzzFake (0.50s)\n    --- FAIL: FuzzFake (0.00s)\n        x_test.go:9: decoded twice\n\n    Failing input written to testdata/fuzz/FuzzFake/def\nFAIL\n'; exit 1 ;;
    esac ;;
*" -run="*) exit "$FAKE_REPLAY" ;;
esac
echo "unexpected: go $*" >&2; exit 2
`

func TestFuzzAllTellsCoordinatorRaceFromFinding(t *testing.T) {
	script, err := filepath.Abs("fuzz-all")
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, fuzz, replay string
		ok                 bool
		want               string
	}{
		{"clean run", "pass", "0", true, "FuzzFake (./x) 1s: no crasher"},
		{"coordinator deadline race", "race", "0", true, "golang/go#75804"},
		{"deadline but the corpus replay fails", "race", "1", false, "FAILED"},
		{"deadline but an input was written", "silent-write", "0", false, "FAILED"},
		{"real crasher", "crash", "0", false, "decoded twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			bin := filepath.Join(root, "bin")
			for dir, files := range map[string]map[string]string{
				bin:                            {"go": fakeGo},
				filepath.Join(root, "scripts"): {"fuzz-all": string(body)},
				filepath.Join(root, "x"):       {"x_test.go": "package x\n\nfunc FuzzFake(f *testing.F) {}\n"},
			} {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				for name, content := range files {
					if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755); err != nil {
						t.Fatal(err)
					}
				}
			}
			cmd := exec.Command(filepath.Join(root, "scripts", "fuzz-all"), "1s")
			cmd.Env = append(os.Environ(),
				"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
				"FAKE_FUZZ="+tc.fuzz, "FAKE_REPLAY="+tc.replay)
			out, err := cmd.CombinedOutput()
			if (err == nil) != tc.ok {
				t.Fatalf("exit error = %v, want success %v\n%s", err, tc.ok, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("output lacks %q:\n%s", tc.want, out)
			}
			if strings.Contains(string(out), "unexpected: go") {
				t.Fatalf("script ran a go command the stand-in does not know:\n%s", out)
			}
		})
	}
}
