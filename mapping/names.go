package mapping

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/keybridge/keybridge/config/presets"
)

// MaxRoleNameLen is the longest role name, in characters.
const MaxRoleNameLen = 64

// ErrRoleName is a role name outside the character set ValidRoleName
// accepts; ErrReservedRoleName a name ValidCustomRoleName keeps from custom
// roles. Errors carrying either also match ErrInvalidRole.
var (
	ErrRoleName         = errors.New("role names use letters, digits, '-', '_', '.' and single inner spaces")
	ErrReservedRoleName = errors.New("reserved role name")
)

// reservedWords are never a custom role's name, whatever the preset: words
// an RLS policy or a proxy may test app.role or X-Auth-Roles against.
var reservedWords = []string{"system", "platform", "public", "authenticated"}

// ValidRoleName is the one rule for the characters of a role name, for every
// role keybridge hands to an application (system, pseudo and custom roles;
// X-Auth-Roles, app.role, app.roles): 1 to MaxRoleNameLen characters, each a
// letter (any script), a decimal digit, '-', '_', '.', or a single space
// between two other characters; the first and the last are a letter or a
// digit. So a name holds no list separator (',', ';', '|'), no quote,
// backslash or brace, no control or invisible character, and no space at
// either end: no list keybridge writes can read one name as two.
func ValidRoleName(name string) error {
	bad := func(why string, args ...any) error {
		return fmt.Errorf("%w: %q %s: %w (1 to %d characters)", ErrInvalidRole, name, fmt.Sprintf(why, args...), ErrRoleName, MaxRoleNameLen)
	}
	if !utf8.ValidString(name) {
		return bad("is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(name); n == 0 || n > MaxRoleNameLen {
		return bad("has %d characters", n)
	}
	alnum := func(c rune) bool { return unicode.IsLetter(c) || unicode.IsDigit(c) }
	first, _ := utf8.DecodeRuneInString(name)
	last, _ := utf8.DecodeLastRuneInString(name)
	if !alnum(first) || !alnum(last) {
		return bad("must start and end with a letter or digit")
	}
	prev := first
	for _, c := range name {
		switch {
		case alnum(c), c == '-', c == '_', c == '.':
		case c == ' ':
			if prev == ' ' {
				return bad("holds two spaces in a row")
			}
		default:
			return bad("holds %q", c)
		}
		prev = c
	}
	return nil
}

// presetRoleNames are the system and pseudo role names of every shipped
// preset: a custom role may take none of them, so switching presets can't
// turn a custom role into a namesake of a system role.
var presetRoleNames = sync.OnceValue(func() []string {
	var out []string
	for _, name := range presets.Names() {
		p, err := loadPreset(name)
		if err != nil {
			continue // New reports it; the engine's own roles are checked apart
		}
		for _, r := range append(p.Roles, p.Pseudo...) {
			out = append(out, r.Name)
		}
	}
	return out
})

// ValidCustomRoleName is ValidRoleName plus the reserved names, compared
// case-insensitively: system, platform, public, authenticated, and every
// system or pseudo role of a shipped preset (Owner, Admin, End User,
// PlatformAdmin, ...). A refusal of a reserved name is ErrReservedRoleName
// and names the role it collides with.
func ValidCustomRoleName(name string) error {
	return validCustomRoleName(name, nil)
}

// validCustomRoleName also refuses the names in taken (an engine's own
// system and pseudo roles).
func validCustomRoleName(name string, taken []string) error {
	if err := ValidRoleName(name); err != nil {
		return err
	}
	for _, w := range reservedWords {
		if strings.EqualFold(name, w) {
			return fmt.Errorf("%w: %w: %q (%s are reserved, in any case): choose another name", ErrInvalidRole, ErrReservedRoleName, name, strings.Join(reservedWords, ", "))
		}
	}
	for _, list := range [][]string{taken, presetRoleNames()} {
		for _, r := range list {
			if strings.EqualFold(name, r) {
				return fmt.Errorf("%w: %w: %q is the preset role %s (names compare case-insensitively): choose another name", ErrInvalidRole, ErrReservedRoleName, name, r)
			}
		}
	}
	return nil
}
