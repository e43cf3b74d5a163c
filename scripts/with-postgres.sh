#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL server:
#
#   scripts/with-postgres.sh npm test
#
# Finds initdb/pg_ctl (PATH, then /usr/lib/postgresql/*/bin; installs the
# Debian package `postgresql` with apt-get when neither has them), initialises
# a cluster in a fresh temp directory, starts it on a free loopback port with
# its socket in that directory, creates the database `arbor_test`, exports
#
#   ARBOR_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:PORT/arbor_test
#
# runs the command, and stops the server and removes the directory when the
# command ends (or the script is interrupted). Exits with the command's status.
# PostgreSQL refuses to run as root, so as root the server runs as the
# `postgres` user (created by the Debian package) through runuser.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 <command> [args...]" >&2
  exit 2
fi

find_pg_bin() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    # Resolve symlinks: createdb sits beside the real pg_ctl, not always beside the link.
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return 0
  fi
  local d
  # Newest major first: the Debian layout keeps the server binaries off PATH.
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -rn); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

if ! PG_BIN="$(find_pg_bin)"; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "with-postgres: initdb not found and cannot install it (needs root and apt-get); install PostgreSQL 13 or newer" >&2
    exit 1
  fi
  echo "with-postgres: installing the Debian package postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
  PG_BIN="$(find_pg_bin)" || { echo "with-postgres: postgresql installed but initdb is still missing" >&2; exit 1; }
fi

if [ "$(id -u)" -eq 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    echo "with-postgres: running as root needs a 'postgres' user to run the server as" >&2
    exit 1
  fi
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/arbor-pg-XXXXXX")"
chmod 0700 "$PG_DIR"
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PG_DIR"; fi

started=0
cleanup() {
  local status=$?
  if [ "$started" -eq 1 ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_DIR"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free loopback port: bind port 0, read what the kernel chose, let it go.
# (Another process could take it before postgres binds; pg_ctl then fails loudly.)
PORT="$(node -e "const s=require('node:net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")"

as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust --encoding=UTF8 --locale=C >"$PG_DIR/initdb.log" 2>&1 || {
  cat "$PG_DIR/initdb.log" >&2
  exit 1
}
started=1
# fsync stays on: the tests and the benchmark measure durable commits.
if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
  -o "-p $PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200" start >/dev/null; then
  cat "$PG_DIR/server.log" >&2
  exit 1
fi
as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres arbor_test

export ARBOR_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/arbor_test"
echo "with-postgres: PostgreSQL $("$PG_BIN/pg_ctl" --version | awk '{print $3}') at $ARBOR_TEST_DATABASE_URL" >&2

set +e
"$@"
status=$?
set -e
exit "$status"
