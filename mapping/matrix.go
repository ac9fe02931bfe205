package mapping

import "fmt"

// MatrixTable is the seed's category x role matrix.
type MatrixTable struct {
	Roles []string    `json:"roles"`
	Rows  []MatrixRow `json:"rows"`
}

// MatrixRow is one category: per role "6/6", "read only", "varies" or "".
type MatrixRow struct {
	Category string            `json:"category"`
	Actions  int               `json:"actions"`
	Cells    map[string]string `json:"cells"`
}

// Matrix summarises each system role's hold on each matrix category.
func Matrix(e *Engine) MatrixTable {
	t := MatrixTable{Roles: e.SystemRoleNames()}
	for _, name := range e.matrixCats {
		var cat Category
		for _, c := range e.categories {
			if c.Name == name {
				cat = c
			}
		}
		row := MatrixRow{Category: name, Actions: len(cat.Permissions), Cells: map[string]string{}}
		for _, r := range e.system {
			held := map[string]bool{}
			for _, p := range r.Permissions {
				held[p] = true
			}
			n, readOnly := 0, true
			for i, p := range cat.Permissions {
				if held[p] {
					n++
					if a := cat.Actions[i]; a != "read" && a != "view" {
						readOnly = false
					}
				}
			}
			switch {
			case n == 0:
				row.Cells[r.Name] = ""
			case n == len(cat.Permissions):
				row.Cells[r.Name] = fmt.Sprintf("%d/%d", n, n)
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
