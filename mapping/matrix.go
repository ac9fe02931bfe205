package mapping

import (
	"slices"
	"strconv"
	"strings"
)

// MatrixTable is the seed's category x role matrix, as the Roles screen
// draws it.
type MatrixTable struct {
	Preset string      `json:"preset"`
	Roles  []string    `json:"roles"` // system roles, highest first
	Rows   []MatrixRow `json:"rows"`
}

// MatrixRow is one category. A cell is "n/n" when the role holds every
// action, "read only" when it holds only read or view actions, "varies" for
// any other subset, and "" for none: the seed's own vocabulary.
type MatrixRow struct {
	Category string            `json:"category"`
	Actions  int               `json:"actions"`
	Cells    map[string]string `json:"cells"`
}

// Matrix summarises each system role's hold on each of the preset's matrix
// categories.
func Matrix(e *Engine) MatrixTable {
	t := MatrixTable{Preset: e.idx.preset, Roles: e.SystemRoleNames(), Rows: []MatrixRow{}}
	for _, name := range e.matrixCats {
		var cat Category
		for _, c := range e.categories {
			if c.Name == name {
				cat = c
			}
		}
		row := MatrixRow{Category: name, Actions: len(cat.Permissions), Cells: map[string]string{}}
		for _, r := range e.system {
			n, readOnly := 0, true
			for i, p := range cat.Permissions {
				if !slices.Contains(r.Permissions, p) {
					continue
				}
				n++
				verb := cat.Actions[i][strings.LastIndexByte(cat.Actions[i], '.')+1:]
				if verb != "read" && verb != "view" {
					readOnly = false
				}
			}
			switch {
			case n == 0:
				row.Cells[r.Name] = ""
			case n == len(cat.Permissions):
				row.Cells[r.Name] = strconv.Itoa(n) + "/" + strconv.Itoa(n)
			case readOnly:
				row.Cells[r.Name] = "read only"
			default:
				row.Cells[r.Name] = "varies"
			}
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}
