// Package migrations holds keybridge's SQL schema as goose migrations,
// embedded in the binary so `keybridge migrate up` needs no files on disk.
package migrations

import "embed"

// FS is the migrations directory.
//
//go:embed *.sql
var FS embed.FS
