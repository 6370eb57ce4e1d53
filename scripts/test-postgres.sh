#!/usr/bin/env bash
# Start (or reuse) a throwaway PostgreSQL cluster for the test suite and the
# benchmarks, and print the URL to use:
#
#     eval "$(bash scripts/test-postgres.sh)"      # exports MEERKAT_TEST_POSTGRES_URL
#     bash scripts/test-postgres.sh stop           # stops the server (data is kept)
#     bash scripts/test-postgres.sh destroy        # stops it and deletes the cluster
#
# Idempotent: a second run reuses the cluster and the running server. Works as
# root (the server runs as the `postgres` OS user) and as an ordinary user.
# Informational output goes to stderr; stdout carries only the export line.
#
# Settings (environment): MEERKAT_PG_PORT (54329), MEERKAT_PGDATA
# (/tmp/meerkat-test-pg-<port>), MEERKAT_PG_PASSWORD (a fixed test password:
# this cluster listens on 127.0.0.1 only and holds nothing but test data).
set -euo pipefail

PORT="${MEERKAT_PG_PORT:-54329}"
# The cluster lives under /tmp rather than in the repository because the
# `postgres` user must be able to reach it, and a clone under /root is not.
PGDATA_DIR="${MEERKAT_PGDATA:-/tmp/meerkat-test-pg-${PORT}}"
DB_USER="meerkat"
DB_NAME="meerkat_test"
DB_PASSWORD="${MEERKAT_PG_PASSWORD:-meerkat-test-password}"

log() { echo "test-postgres: $*" >&2; }

find_pg_bin() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "${dir}" && -x "${dir}/initdb" ]]; then
        echo "${dir}"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    fi
}

PG_BIN="$(find_pg_bin)"
if [[ -z "${PG_BIN}" ]]; then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "PostgreSQL server binaries not found; installing the Debian package"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq postgresql >&2
        PG_BIN="$(find_pg_bin)"
    fi
    if [[ -z "${PG_BIN}" ]]; then
        log "PostgreSQL server binaries not found (install the 'postgresql' package)"
        exit 1
    fi
fi

# Run a server-side command as the cluster owner.
if [[ "$(id -u)" -eq 0 ]]; then
    if ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    OWNER="postgres"
    as_owner() { runuser -u postgres -- "$@"; }
else
    OWNER="$(id -un)"
    as_owner() { "$@"; }
fi

pg_ctl_cmd() { as_owner "${PG_BIN}/pg_ctl" -D "${PGDATA_DIR}" "$@"; }

case "${1:-start}" in
    stop)
        if [[ -f "${PGDATA_DIR}/PG_VERSION" ]] && pg_ctl_cmd status >/dev/null 2>&1; then
            pg_ctl_cmd -m fast -w stop >&2
        fi
        exit 0
        ;;
    destroy)
        if [[ -f "${PGDATA_DIR}/PG_VERSION" ]] && pg_ctl_cmd status >/dev/null 2>&1; then
            pg_ctl_cmd -m fast -w stop >&2
        fi
        rm -rf "${PGDATA_DIR}"
        exit 0
        ;;
    start) ;;
    *)
        log "usage: $0 [start|stop|destroy]"
        exit 2
        ;;
esac

if [[ ! -f "${PGDATA_DIR}/PG_VERSION" ]]; then
    log "creating cluster in ${PGDATA_DIR}"
    mkdir -p "${PGDATA_DIR}"
    chown "${OWNER}" "${PGDATA_DIR}"
    chmod 700 "${PGDATA_DIR}"
    # Local (socket) connections are trusted for the admin steps below; TCP
    # connections need a password, so the bad-credentials tests are real.
    as_owner "${PG_BIN}/initdb" -D "${PGDATA_DIR}" -U postgres -E UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 >&2
fi

if ! pg_ctl_cmd status >/dev/null 2>&1; then
    log "starting server on 127.0.0.1:${PORT}"
    pg_ctl_cmd -l "${PGDATA_DIR}/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=${PORT} -c unix_socket_directories=${PGDATA_DIR} -c max_connections=300" \
        start >&2
fi

psql_admin() {
    as_owner "${PG_BIN}/psql" -X -q -v ON_ERROR_STOP=1 -h "${PGDATA_DIR}" -p "${PORT}" \
        -U postgres "$@"
}

# The password is passed as a psql variable and quoted by psql (:'pw'), so
# no shell or SQL quoting issue can arise from it.
psql_admin -d postgres -v pw="${DB_PASSWORD}" >&2 <<SQL
SELECT format('CREATE ROLE %I LOGIN', '${DB_USER}')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${DB_USER}') \gexec
ALTER ROLE ${DB_USER} WITH LOGIN PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', '${DB_NAME}', '${DB_USER}')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '${DB_NAME}') \gexec
SQL

log "ready: postgresql://${DB_USER}:***@127.0.0.1:${PORT}/${DB_NAME}"
echo "export MEERKAT_TEST_POSTGRES_URL=postgresql://${DB_USER}:${DB_PASSWORD}@127.0.0.1:${PORT}/${DB_NAME}"
