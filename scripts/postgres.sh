#!/usr/bin/env bash
# A throwaway local PostgreSQL server for `keeptune sweep --storage postgresql://...`: the sweep tests
# (tests/sweep/test_postgres.py, run by .ci/run) and anyone trying a many-machine sweep on one machine.
#
#   bash scripts/postgres.sh start   # install, initialise, start; prints the URL (only the URL, on stdout)
#   bash scripts/postgres.sh url     # the URL of the running server
#   bash scripts/postgres.sh stop    # stop it and delete its folder (the database goes with it)
#
# e.g.  export KEEPTUNE_TEST_POSTGRES=$(bash scripts/postgres.sh start)
#
# The server is Debian's PostgreSQL (`apt-get install postgresql`, done here when no initdb is found; that
# needs root). Its cluster lives in /tmp/keeptune-postgres.HASH (HASH: of this checkout's path, so that two
# checkouts get two servers; KEEPTUNE_POSTGRES_DIR overrides the folder), owned by the `postgres` user when run
# as root (initdb refuses root), listening on a unix socket in that folder only (no TCP port to collide with),
# trusting local connections, with fsync off: a server for tests, not for data you keep. The URL names the
# database `keeptune` and the socket folder, e.g.
#   postgresql://postgres@/keeptune?host=/tmp/keeptune-postgres.1a2b3c4d
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${KEEPTUNE_POSTGRES_DIR:-/tmp/keeptune-postgres.$(pwd -P | sha256sum | cut -c1-8)}
DB=keeptune
DATA=$DIR/data
LOG=$DIR/server.log

say() { echo "postgres.sh: $*" >&2; }

# The folder of initdb and pg_ctl: Debian keeps them off PATH, in /usr/lib/postgresql/VERSION/bin.
bindir() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$found" ] && [ -x "$found/initdb" ]; then
    echo "$found"
  elif command -v initdb >/dev/null; then
    dirname "$(command -v initdb)"
  fi
}

install_server() {
  if [ "$(id -u)" != 0 ]; then
    say "no PostgreSQL server here (initdb not found), and installing it needs root: apt-get install postgresql"
    exit 2
  fi
  say "installing Debian's postgresql (apt-get update; apt-get install -y postgresql)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
}

# Runs a server program as the folder's owner: `postgres` when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

url() { echo "postgresql://postgres@/$DB?host=$DIR"; }

running() { [ -f "$DATA/postmaster.pid" ] && as_owner "$BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1; }

start() {
  BIN=$(bindir)
  if [ -z "$BIN" ]; then
    install_server
    BIN=$(bindir)
    [ -n "$BIN" ] || { say "apt-get installed postgresql, yet no initdb in /usr/lib/postgresql/*/bin"; exit 1; }
  fi
  if running; then
    url
    return
  fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    rm -rf "$DIR"
    mkdir -p "$DIR"
    [ "$(id -u)" != 0 ] || chown postgres: "$DIR"
    as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
      || { cat "$DIR/initdb.log" >&2; say "initdb failed"; exit 1; }
  fi
  as_owner "$BIN/pg_ctl" start -D "$DATA" -l "$LOG" -w -t 60 \
    -o "-c listen_addresses='' -k $DIR -c fsync=off -c synchronous_commit=off -c max_connections=100" >&2 \
    || { tail -n 20 "$LOG" >&2; say "the server did not start (its log: $LOG)"; exit 1; }
  if ! "$BIN/psql" -h "$DIR" -U postgres -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = '$DB'" \
      | grep -q 1; then
    "$BIN/createdb" -h "$DIR" -U postgres "$DB"
  fi
  say "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') running in $DIR"
  url
}

stop() {
  BIN=$(bindir)
  if [ -n "$BIN" ] && [ -f "$DATA/postmaster.pid" ]; then
    as_owner "$BIN/pg_ctl" stop -D "$DATA" -m fast -w >&2 || true
  fi
  rm -rf "$DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url)
    BIN=$(bindir)
    if [ -n "$BIN" ] && running; then url; else say "not running (bash scripts/postgres.sh start)"; exit 1; fi ;;
  *) echo "usage: bash scripts/postgres.sh start|stop|url" >&2; exit 2 ;;
esac
