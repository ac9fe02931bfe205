#!/usr/bin/env python3
"""Admin-API steps for the demo realms, on the local Keycloak.

  realm.py post-import   create organizations acme and globex with their members (idempotent)
  realm.py reset         delete realms fastn, other and endatix, re-create them from deploy/keycloak, then post-import

Organizations are made through the admin API rather than the realm import so
the same steps work whatever the import of organizations supports.
"""
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KC = os.environ.get("KC_URL", "http://127.0.0.1:8180")
ADMIN = os.environ.get("KC_ADMIN", "admin")
PASSWORD = os.environ.get("KC_ADMIN_PASSWORD", "keybridge-admin")
ORGS = {"acme": "acme.test", "globex": "globex.test"}
# Every deploy/keycloak/realm-<name>.json; deploy/local/up imports the same files.
REALMS = ("fastn", "other", "endatix")


def token():
    data = urllib.parse.urlencode({"grant_type": "password", "client_id": "admin-cli",
                                   "username": ADMIN, "password": PASSWORD}).encode()
    with urllib.request.urlopen(KC + "/realms/master/protocol/openid-connect/token", data, timeout=30) as r:
        return json.load(r)["access_token"]


def call(tok, method, path, body=None, ok=(200, 201, 204)):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(KC + "/admin/realms" + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + tok)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        if e.code in ok:
            return e.code, None
        raise SystemExit(f"{method} {path}: {e.code} {e.read()[:300]!r}")


def post_import(tok):
    _, users = call(tok, "GET", "/fastn/users?max=1000&briefRepresentation=false")
    _, orgs = call(tok, "GET", "/fastn/organizations?max=100")
    have = {o["alias"]: o for o in orgs or []}
    for alias, domain in ORGS.items():
        if alias not in have:
            call(tok, "POST", "/fastn/organizations", {"name": alias, "alias": alias, "enabled": True,
                                                       "domains": [{"name": domain}]})
    _, orgs = call(tok, "GET", "/fastn/organizations?max=100")
    have = {o["alias"]: o for o in orgs}
    for alias in ORGS:
        oid = have[alias]["id"]
        _, members = call(tok, "GET", f"/fastn/organizations/{oid}/members?max=1000")
        current = {m["id"] for m in members or []}
        for u in users:
            if u.get("attributes", {}).get("tenant_id") == [alias] and u["id"] not in current:
                req = urllib.request.Request(KC + f"/admin/realms/fastn/organizations/{oid}/members",
                                             data=json.dumps(u["id"]).encode(), method="POST")
                req.add_header("Authorization", "Bearer " + tok)
                req.add_header("Content-Type", "application/json")
                urllib.request.urlopen(req, timeout=30).read()


def reset(tok):
    for name in REALMS:
        call(tok, "DELETE", "/" + name, ok=(204, 404))
        with open(os.path.join(ROOT, "deploy", "keycloak", f"realm-{name}.json")) as f:
            call(tok, "POST", "", json.load(f))


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    tok = token()
    if cmd == "reset":
        reset(tok)
        tok = token()
        post_import(tok)
    elif cmd == "post-import":
        post_import(tok)
    else:
        raise SystemExit(__doc__)
