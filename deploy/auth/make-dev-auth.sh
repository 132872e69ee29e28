#!/usr/bin/env bash
# Makes what the compose stack reads from deploy/auth/: a CA, the API's certificate (for
# localhost and signalbox-api), a client certificate for a CI service, the control key the API
# and the worker share, a policy from policy.example.toml and auth.toml; Temporal's
# certificate (its services and its frontend, for the name `temporal`) and the client
# certificates of the API, the worker, the UI, the agent and the admin jobs, which Temporal
# and etcd ask for; PostgreSQL's and etcd's certificates; the
# UI gate's certificate and its login (user `admin`, a random password printed once).
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
# Temporal's own certificate serves its services to each other too, so it is a client as well.
issue() { # name subject extensions
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" -keyout "$1-key.pem" -out "$1.csr"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -days 30 -out "$1.pem" -extfile <(printf '%b' "$3")
}
issue temporal "/CN=temporal" 'subjectAltName=DNS:temporal,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n'
issue etcd "/CN=etcd" 'subjectAltName=DNS:etcd,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'
# The parts' client certificates: Temporal and etcd ask for one.
for client in api worker ui admin agent; do
    issue "client-$client" "/OU=signalbox-parts/CN=signalbox-$client" 'extendedKeyUsage=clientAuth\n'
done
issue postgres "/CN=postgresql" 'subjectAltName=DNS:postgresql\nextendedKeyUsage=serverAuth\n'
issue ui "/CN=temporal-ui" 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'
password=$(openssl rand -base64 18)
printf 'admin:%s\n' "$(openssl passwd -apr1 "$password")" > ui.htpasswd
rm -f ./*.csr ./*.srl
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
chmod 0644 ca.pem api.pem ci-bot.pem policy.toml auth.toml temporal.pem client-*.pem ui.pem postgres.pem etcd.pem
# The containers run as their own users: for this trial stack they read the keys they need
# as any local user could. In production, give them as secrets owned by each service.
chmod 0644 api-key.pem control.key temporal-key.pem client-*-key.pem ui-key.pem postgres-key.pem etcd-key.pem ui.htpasswd
echo "Temporal UI: https://localhost:8443 as admin, password $password (only shown now)"

echo "made deploy/auth: signalbox --api https://localhost:50051 --ca deploy/auth/ca.pem --cert deploy/auth/ci-bot.pem --key deploy/auth/ci-bot-key.pem ..."
