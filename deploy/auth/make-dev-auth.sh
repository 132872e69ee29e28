#!/usr/bin/env bash
# Makes what the compose stack's API and worker read from deploy/auth/: a CA, the API's
# certificate (for localhost and signalbox-api), a client certificate for a CI service, the
# control key the API and the worker share, a policy from policy.example.toml and auth.toml.
# For a trial only: in production the certificates come from your CA and people log in with
# your identity provider (add an [oidc] section naming its issuer, audience and JWKS).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
[ -e auth.toml ] && { echo "deploy/auth/auth.toml exists: remove it to make new credentials" >&2; exit 1; }
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=signalbox dev CA" -keyout ca-key.pem -out ca.pem
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=signalbox-api" -keyout api-key.pem -out api.csr
openssl x509 -req -in api.csr -CA ca.pem -CAkey ca-key.pem -days 30 -out api.pem \
    -extfile <(printf 'subjectAltName=DNS:localhost,DNS:signalbox-api,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n')
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/OU=sre/CN=ci-bot" -keyout ci-bot-key.pem -out ci-bot.csr
openssl x509 -req -in ci-bot.csr -CA ca.pem -CAkey ca-key.pem -days 30 -out ci-bot.pem -extfile <(printf 'extendedKeyUsage=clientAuth\n')
rm -f ./*.csr
openssl rand -hex 32 > control.key
[ -e policy.toml ] || cp policy.example.toml policy.toml
cat > auth.toml <<'TOML'
policy = "policy.toml"
control_key = "control.key"

[tls]
cert = "api.pem"
key = "api-key.pem"
client_ca = "ca.pem"
TOML
chmod 0644 ca.pem api.pem ci-bot.pem policy.toml auth.toml
echo "made deploy/auth: signalbox --api https://localhost:50051 --ca deploy/auth/ca.pem --cert deploy/auth/ci-bot.pem --key deploy/auth/ci-bot-key.pem ..."
