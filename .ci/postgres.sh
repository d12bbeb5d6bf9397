#!/usr/bin/env bash
# Install and start a PostgreSQL server on 127.0.0.1 for the tests; prints the URI to use.
# Idempotent: safe to run again on a machine where it already ran.
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
version=$(pg_lsclusters --no-header | awk 'NR==1 {print $1}')
if [ -z "$version" ]; then
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters --no-header | awk '$2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster "$version" main start -o "-c listen_addresses=127.0.0.1" >&2
fi
port=$(pg_lsclusters --no-header | awk '$2=="main" {print $3; exit}')
runuser -u postgres -- psql -q -p "$port" -v ON_ERROR_STOP=1 >&2 <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'storemgr') THEN
    CREATE ROLE storemgr LOGIN PASSWORD 'storemgr' CREATEDB;
  END IF;
END \$\$;
SQL
if ! runuser -u postgres -- psql -p "$port" -tAc "SELECT 1 FROM pg_database WHERE datname='storemgr'" | grep -q 1; then
  runuser -u postgres -- createdb -p "$port" -O storemgr storemgr >&2
fi
echo "postgres://storemgr:storemgr@127.0.0.1:${port}/storemgr"
