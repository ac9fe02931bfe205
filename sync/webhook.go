package sync

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Webhook is a Keycloak event delivery in the shape of the common
// keycloak-events extension: type "admin.USER-UPDATE" or "access.LOGIN".
type Webhook struct {
	Type          string `json:"type"`
	UID           string `json:"uid"`
	ID            string `json:"id"`
	Time          int64  `json:"time"`
	RealmID       string `json:"realmId"`
	ResourceType  string `json:"resourceType"`
	OperationType string `json:"operationType"`
	ResourcePath  string `json:"resourcePath"`
	UserID        string `json:"userId"`
	Error         string `json:"error"`
	// Representation is ignored on purpose: changes are re-read from
	// Keycloak, never trusted from the payload.
	Representation json.RawMessage `json:"representation"`
}

// Webhook verification errors: all answered 401 or 400, nothing applied.
var (
	ErrNoSignature  = errors.New("missing X-Keycloak-Signature")
	ErrBadSignature = errors.New("signature does not match the body")
	ErrMalformed    = errors.New("malformed event")
)

// VerifySignature checks the lowercase hex HMAC-SHA256 of the raw body in
// constant time.
func VerifySignature(secret, body []byte, header string) error {
	if header == "" {
		return ErrNoSignature
	}
	header = strings.TrimPrefix(strings.TrimSpace(header), "sha256=")
	got, err := hex.DecodeString(header)
	if err != nil || len(got) != sha256.Size {
		return ErrBadSignature
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return ErrBadSignature
	}
	return nil
}

// Sign is the signature a sender puts in X-Keycloak-Signature.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// DecodeWebhook parses a verified body strictly enough to act on it.
func DecodeWebhook(body []byte) (*Webhook, error) {
	var w Webhook
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if w.Type == "" || (w.UID == "" && w.ID == "") {
		return nil, fmt.Errorf("%w: type and uid or id are required", ErrMalformed)
	}
	if len(w.UID) > 200 || len(w.ID) > 200 || len(w.Type) > 100 || len(w.ResourcePath) > 1000 {
		return nil, fmt.Errorf("%w: field too long", ErrMalformed)
	}
	return &w, nil
}

// Class is the bounded metric label of an event type.
func (w *Webhook) Class() string {
	switch {
	case strings.HasPrefix(w.Type, "admin."):
		return "admin"
	case strings.HasPrefix(w.Type, "access."):
		return "access"
	}
	return "unknown"
}
