#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the service tests (Debian's postgresql package).
#
#   eval "$(bash scripts/postgres-test.sh start)"    # starts one, exports EMOFUSE_TEST_POSTGRES_URL
#   bash scripts/postgres-test.sh stop                # stops it and removes its folder
#
# The cluster lives in $EMOFUSE_TEST_PG_DIR (default /tmp/emofuse-test-pg), listens on 127.0.0.1
# only (a free port) and trusts local connections: for tests, never for data that matters.
# As root, the server runs as the 'postgres' user (PostgreSQL refuses to run as root).
set -euo pipefail
DIR=${EMOFUSE_TEST_PG_DIR:-/tmp/emofuse-test-pg}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-start}" in
start)
  if [ -z "$(bin_dir)" ]; then
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  fi
  BIN=$(bin_dir)
  [ -n "$BIN" ] || { echo "PostgreSQL server binaries not found after install" >&2; exit 1; }
  if [ -f "$DIR/data/postmaster.pid" ]; then "$0" stop >&2 || true; fi
  rm -rf "$DIR" && mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_owner "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >"$DIR/initdb.log" 2>&1 ||
    { cat "$DIR/initdb.log" >&2; exit 1; }
  as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
    -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >&2
  as_owner "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres emofuse_test
  echo "$PORT" >"$DIR/port"
  echo "export EMOFUSE_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PORT/emofuse_test"
  ;;
stop)
  BIN=$(bin_dir)
  if [ -n "$BIN" ] && [ -f "$DIR/data/postmaster.pid" ]; then
    as_owner "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >&2 || true
  fi
  rm -rf "$DIR"
  ;;
*)
  echo "usage: $0 start|stop" >&2
  exit 2
  ;;
esac
