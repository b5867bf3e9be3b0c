#!/usr/bin/env bash
# `make serve`: the production stack on this machine: gunicorn (several workers) on
# PostgreSQL and Redis, ENCLAVE_ENV=production. Creates the database, a secret key
# and a keyring on first use (in instance-prod/, mode 0600), migrates, seeds the demo.
set -euo pipefail
cd "$(dirname "$0")/.."

INSTANCE="${ENCLAVE_INSTANCE_PATH:-$PWD/instance-prod}"
DB_NAME="${ENCLAVE_SERVE_DB:-enclave}"
export ENCLAVE_INSTANCE_PATH="$INSTANCE"
export ENCLAVE_DATABASE_URL="${ENCLAVE_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/$DB_NAME}"
export ENCLAVE_REDIS_URL="${ENCLAVE_REDIS_URL:-redis://127.0.0.1:6379/0}"
export ENCLAVE_KEYRING="${ENCLAVE_KEYRING:-$INSTANCE/keyring.json}"
export ENCLAVE_SECURE_COOKIES="${ENCLAVE_SECURE_COOKIES:-false}"  # plain HTTP on localhost
export ENCLAVE_BASE_URL="${ENCLAVE_BASE_URL:-http://${ENCLAVE_GUNICORN_BIND:-127.0.0.1:8000}}"
export ENCLAVE_PROXY_COUNT="${ENCLAVE_PROXY_COUNT:-0}"  # browsers connect to gunicorn here

umask 077
mkdir -p "$INSTANCE"
if [ ! -s "$INSTANCE/secret_key" ]; then
  .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(48))' > "$INSTANCE/secret_key"
fi
export ENCLAVE_SECRET_KEY="$(cat "$INSTANCE/secret_key")"

if [[ "$ENCLAVE_DATABASE_URL" == *"@127.0.0.1:5432/$DB_NAME" ]]; then
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB_NAME'" \
    | grep -q 1 || createdb -h 127.0.0.1 -U postgres "$DB_NAME"
fi
if [ ! -s "$ENCLAVE_KEYRING" ]; then
  ENCLAVE_ENV=development .venv/bin/enclave init   # development may create the keyring
fi
# the keyring is sealed with a passphrase kept beside it here (on a real server: a
# secrets manager or the TPM through ENCLAVE_KEYRING_COMMAND, never next to the file)
if [ -z "${ENCLAVE_KEYRING_COMMAND:-}" ] && [ -z "${ENCLAVE_KEYRING_PASSPHRASE:-}" ]; then
  export ENCLAVE_KEYRING_PASSPHRASE_FILE="${ENCLAVE_KEYRING_PASSPHRASE_FILE:-$INSTANCE/keyring.passphrase}"
  if [ ! -s "$ENCLAVE_KEYRING_PASSPHRASE_FILE" ]; then
    .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))' > "$ENCLAVE_KEYRING_PASSPHRASE_FILE"
  fi
  if ! grep -q '"sealed"' "$ENCLAVE_KEYRING"; then
    ENCLAVE_ENV=development .venv/bin/enclave keys seal --passphrase-stdin < "$ENCLAVE_KEYRING_PASSPHRASE_FILE"
  fi
fi

export ENCLAVE_ENV=production
.venv/bin/enclave init
.venv/bin/enclave seed-demo --if-empty

export PROMETHEUS_MULTIPROC_DIR="$INSTANCE/metrics"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
echo "serving on http://${ENCLAVE_GUNICORN_BIND:-127.0.0.1:8000}"
exec .venv/bin/gunicorn -c gunicorn.conf.py wsgi:app
