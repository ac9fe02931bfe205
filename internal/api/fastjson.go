package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/bytedance/sonic"
	"github.com/gin-gonic/gin"
)

// The decision routes answer thousands of requests a second, and with
// encoding/json their bodies cost more CPU than anything keybridge decides.
// They decode and encode with sonic (a JIT JSON codec, already in gin's
// module graph; on platforms it does not support it is encoding/json).
// encoding/json stays the definition of what the bodies mean: whatever sonic
// refuses is decoded again by encoding/json, which gives the error (or the
// value), and FuzzCheckBody proves that everything sonic accepts decodes to
// exactly what encoding/json makes of it.
var (
	// sonicDecode rejects unknown fields, like the encoding/json decoder
	// ParseCheckBody used before, and refuses raw control characters in
	// strings as RFC 8259 does.
	sonicDecode = sonic.Config{DisallowUnknownFields: true, ValidateString: true}.Froze()
	// sonicEncode writes the JSON values encoding/json writes (HTML-safe
	// escapes, sorted map keys, invalid UTF-8 replaced); a few escapes are
	// spelled differently (\u000c for \f), as FuzzAnswerEncoding allows.
	sonicEncode = sonic.ConfigStd
)

// maxCheckBody bounds a /v1/check body: 100 checks of 32 permissions each
// fit well below it.
const maxCheckBody = 1 << 20

// readBody reads a request body of at most limit bytes.
func readBody(r io.Reader, limit int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, errors.New("body: " + err.Error())
	}
	if len(b) > limit {
		return nil, errors.New("body: larger than " + strconv.Itoa(limit) + " bytes")
	}
	return b, nil
}

// decodeStrict decodes exactly one JSON value into v, refusing unknown
// fields and trailing data. Input must be UTF-8 (RFC 8259 §8.1); encoding/json
// would silently replace bad bytes, which then reach the audit log.
func decodeStrict[T any](data []byte) (T, error) {
	var v T
	if !utf8.Valid(data) {
		return v, errors.New("body: not valid UTF-8")
	}
	if err := sonicDecode.Unmarshal(data, &v); err == nil {
		return v, nil
	}
	// sonic refused: encoding/json has the last word and the clear message,
	// decoding into a fresh value.
	var w T
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return w, errors.New("body: " + strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); err != io.EOF {
		return w, errors.New("body: one JSON value expected, found more after it")
	}
	return w, nil
}

const jsonContentType = "application/json; charset=utf-8"

// writeJSON answers v as JSON: the same value c.JSON would write. It
// returns the bytes written, or nil when v could not be encoded (answered 500).
func writeJSON(c *gin.Context, status int, v any) []byte {
	b, err := sonicEncode.Marshal(v)
	if err != nil {
		Error(c, http.StatusInternalServerError, "internal", "could not encode the answer")
		return nil
	}
	c.Data(status, jsonContentType, b)
	return b
}
