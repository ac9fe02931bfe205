package sync

import (
	"bytes"
	"errors"
	"testing"
)

func TestVerifySignature(t *testing.T) {
	secret := []byte("s3cret")
	body := []byte(`{"type":"admin.USER-UPDATE","uid":"1"}`)
	good := Sign(secret, body)
	tests := []struct {
		name   string
		body   []byte
		header string
		want   error
	}{
		{"valid", body, good, nil},
		{"valid with sha256= prefix", body, "sha256=" + good, nil},
		{"missing", body, "", ErrNoSignature},
		{"wrong", body, Sign([]byte("other"), body), ErrBadSignature},
		{"truncated", body, good[:40], ErrBadSignature},
		{"not hex", body, "zz" + good[2:], ErrBadSignature},
		{"valid signature over a different body", append(bytes.Clone(body), ' '), good, ErrBadSignature},
		{"uppercase hex of the right digest", body, string(bytes.ToUpper([]byte(good))), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := VerifySignature(secret, tt.body, tt.header); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzWebhookDecoding(f *testing.F) {
	f.Add([]byte(`{"type":"admin.USER-UPDATE","uid":"u1","resourceType":"USER","resourcePath":"users/x"}`))
	f.Add([]byte(`{"type":"access.LOGIN","id":"e","userId":"x","representation":"{\"a\":1}"}`))
	f.Add([]byte(`[1,2,3]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		sig := Sign([]byte("k"), body)
		if VerifySignature([]byte("k"), body, sig) != nil {
			t.Fatal("own signature refused")
		}
		w, err := DecodeWebhook(body)
		if err == nil && (w.Type == "" || w.Class() == "") {
			t.Fatal("accepted an event without a type")
		}
		// Placing any path never panics, whatever the resource type.
		for _, typ := range []string{"USER", "GROUP", "REALM_ROLE", "CLIENT_ROLE", "ORGANIZATION_MEMBERSHIP", "IDENTITY_PROVIDER"} {
			_ = placeAdminEvent(AdminEvent{ResourceType: typ, OperationType: "UPDATE", ResourcePath: string(body)}, true)
		}
	})
}
