# Shared by deploy/local/up, down and reset-realm.
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${KEYBRIDGE_LOCAL_DIR:-$ROOT/.local}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/keybridge"
KC_VERSION="${KEYBRIDGE_KEYCLOAK_VERSION:-26.5.6}"
KC_HOME="$STATE/keycloak-$KC_VERSION"
KC_PID="$STATE/keycloak.pid"
KC_LOG="$STATE/keycloak.log"
KC_PORT=8180
KC_MGMT_PORT=9180
KC_URL="http://127.0.0.1:$KC_PORT"
KC_ADMIN=admin
KC_ADMIN_PASSWORD=keybridge-admin
PG_PORT=5432
PG_OWNER_PW=keybridge-owner
PG_APP_PW=keybridge-app
PG_SYNC_PW=keybridge-sync
KC_CLIENT_SECRET=keybridge-demo-secret
WEBHOOK_SECRET=keybridge-webhook-demo-secret
USER_PASSWORD=demo-Passw0rd

log() { printf '[local] %s\n' "$*" >&2; }
die() { printf '[local] error: %s\n' "$*" >&2; exit 1; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -f "$STATE/.apt-updated" ]; then
    apt-get update -qq
    mkdir -p "$STATE" && touch "$STATE/.apt-updated"
  fi
  # Package scripts must not start services in a sandbox without init.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  rm -f /usr/sbin/policy-rc.d
}

kc_ready() { curl -sf -o /dev/null "http://127.0.0.1:$KC_MGMT_PORT/health/ready"; }

# admin_token prints a master-realm admin access token.
admin_token() {
  curl -sf -d grant_type=password -d client_id=admin-cli -d "username=$KC_ADMIN" -d "password=$KC_ADMIN_PASSWORD" \
    "$KC_URL/realms/master/protocol/openid-connect/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
