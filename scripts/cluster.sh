#!/usr/bin/env bash
# A trial cluster on this machine, all on 127.0.0.1: Kamailio (deploy/kamailio) in
# front of N IVR nodes sharing one PostgreSQL (the store: one waiting line, tickets,
# callbacks), each node with its own ports, config and logs in .cluster/node-K/.
# Callers dial Kamailio: sip:12345@127.0.0.1:5060.
#
#   scripts/cluster.sh start [N]    start Kamailio and N nodes (default 2)
#   scripts/cluster.sh status       what runs, and what each node answers to OPTIONS
#   scripts/cluster.sh restart K    drain node K (its calls finish), start it again
#   scripts/cluster.sh stop         drain every node, then stop Kamailio and PostgreSQL
#   scripts/cluster.sh stop --now   end the calls at once
#
# Node configs are written from config.toml (IVR_CONFIG=... for another file) with
# each node's own SIP port (5061, 5062...), RTP range, web port (8081, 8082...),
# recordings folder and pid file, and the one [storage] url of the shared store.
# PostgreSQL (Debian's package postgresql) runs from .cluster/postgres/ on
# 127.0.0.1:5433 (as the user postgres when started by root). See docs/cluster.md.
# Settable: CLUSTER_DIR (.cluster), CLUSTER_SIP_PORT (5060), CLUSTER_NODE_PORT (5061),
# CLUSTER_WEB_PORT (8081), CLUSTER_ALLOW (127.0.0.1: the addresses allowed to call),
# CLUSTER_PG_PORT (5433), CLUSTER_STORAGE_URL (postgresql://... of a PostgreSQL
# running elsewhere: none is started here).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN=${CLUSTER_DIR:-.cluster}
SIP_PORT=${CLUSTER_SIP_PORT:-$(cat "$RUN/kamailio/port" 2>/dev/null || echo 5060)}
NODE_PORT=${CLUSTER_NODE_PORT:-5061}
WEB_PORT=${CLUSTER_WEB_PORT:-8081}
ALLOW=${CLUSTER_ALLOW:-127.0.0.1}
BASE_CONFIG=${IVR_CONFIG:-config.toml}
PY=.venv/bin/python
IVR=.venv/bin/ivr

# ---- the shared store -----------------------------------------------------------
# One PostgreSQL for every node: started from $RUN/postgres (made once by initdb, kept
# between trials) unless CLUSTER_STORAGE_URL names one; every node's config gets its
# URL as [storage] url.
PG_DIR="$RUN/postgres"
PG_PORT=${CLUSTER_PG_PORT:-$(cat "$PG_DIR/port" 2>/dev/null || echo 5433)}
STORAGE_URL=${CLUSTER_STORAGE_URL:-}
# ----------------------------------------------------------------------------------

say() { echo "cluster: $*"; }
die() { echo "cluster: $*" >&2; exit 1; }

kamailio_bin() {
  command -v kamailio || { [ -x /usr/sbin/kamailio ] && echo /usr/sbin/kamailio; } || true
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

node_dirs() { ls -d "$RUN"/node-* 2>/dev/null | sort -V; }

node_port() { sed -n 's/^port = \([0-9]*\)$/\1/p' "$1/config.toml" | head -1; }

node_pid() { [ -f "$1/ivr.pid" ] && cat "$1/ivr.pid" 2>/dev/null || true; }

start_node() {  # DIR: start `ivr serve` and wait until it answers OPTIONS with 200
  local dir=$1 port pid
  port=$(node_port "$dir")
  setsid "$IVR" --config "$dir/config.toml" serve >>"$dir/serve.log" 2>&1 < /dev/null &
  pid=$!
  for _ in $(seq 1 600); do
    if [ "$("$PY" scripts/cluster_parts.py probe "$port")" = 200 ]; then
      say "$(basename "$dir") ready on 127.0.0.1:$port (pid $pid, log $dir/serve.log)"
      return 0
    fi
    if ! alive "$pid"; then
      tail -5 "$dir/serve.log" >&2
      die "$(basename "$dir") did not start (log: $dir/serve.log)"
    fi
    sleep 0.2
  done
  die "$(basename "$dir") not ready after 120 s (log: $dir/serve.log)"
}

start_store() {  # sets STORAGE_URL
  if [ -n "$STORAGE_URL" ]; then
    say "store: $STORAGE_URL (CLUSTER_STORAGE_URL; not started here)"
    return 0
  fi
  STORAGE_URL=$("$PY" scripts/cluster_parts.py postgres-start "$PG_DIR" "$PG_PORT") ||
    die "PostgreSQL did not start (log: $PG_DIR/server.log)"
  say "postgresql: $STORAGE_URL (data $PG_DIR/data, log $PG_DIR/server.log)"
}

start() {
  local n=${1:-2} bin
  [[ "$n" =~ ^[1-9][0-9]?$ ]] || die "N must be 1..99, not '$n'"
  [ -x "$IVR" ] || die "no .venv: run ./scripts/setup.sh first"
  bin=$(kamailio_bin)
  [ -n "$bin" ] || die "kamailio is not installed: apt-get install kamailio"
  if alive "$(cat "$RUN/kamailio/pid" 2>/dev/null || true)"; then
    die "already running (scripts/cluster.sh status; stop first)"
  fi
  mkdir -p "$RUN/kamailio/run"
  start_store
  local old
  for old in $(node_dirs); do  # nodes of an earlier, larger trial
    if [ "${old##*-}" -gt "$n" ]; then
      alive "$(node_pid "$old")" && die "$(basename "$old") still runs: stop first"
      rm -rf "$old"
    fi
  done
  : >"$RUN/kamailio/dispatcher.list"
  for k in $(seq 1 "$n"); do
    local dir="$RUN/node-$k" port=$((NODE_PORT + k - 1))
    local rtp_min=$((20000 + (k - 1) * 1000))
    "$PY" scripts/cluster_parts.py node-config "$BASE_CONFIG" "$dir" "$port" \
      "$rtp_min" $((rtp_min + 998)) $((WEB_PORT + k - 1)) "$STORAGE_URL" >/dev/null
    echo "1 sip:127.0.0.1:$port 0 0 duid=node-$k" >>"$RUN/kamailio/dispatcher.list"
  done
  : >"$RUN/kamailio/address.list"
  for address in $ALLOW; do
    echo "1 $address 32 0" >>"$RUN/kamailio/address.list"
  done
  # nodes one after the other: the first renders the prompts into the shared cache
  for k in $(seq 1 "$n"); do
    start_node "$RUN/node-$k"
  done
  local kdir
  kdir=$(cd "$RUN/kamailio" && pwd)
  setsid "$bin" -f "$ROOT/deploy/kamailio/kamailio.cfg" -DD -E -Y "$kdir/run" -w "$kdir/run" \
    -A LISTEN_ADDR=127.0.0.1 -A "LISTEN_PORT=$SIP_PORT" \
    -A "DS_LIST=\"$kdir/dispatcher.list\"" -A "ALLOW_LIST=\"$kdir/address.list\"" \
    >>"$kdir/kamailio.log" 2>&1 < /dev/null &
  echo $! >"$kdir/pid"
  echo "$SIP_PORT" >"$kdir/port"
  for _ in $(seq 1 50); do
    if [ "$("$PY" scripts/cluster_parts.py probe "$SIP_PORT")" = 200 ]; then
      say "kamailio on 127.0.0.1:$SIP_PORT (pid $(cat "$kdir/pid"), log $kdir/kamailio.log)"
      say "dial sip:12345@127.0.0.1:$SIP_PORT, e.g. $IVR call sip:12345@127.0.0.1:$SIP_PORT"
      return 0
    fi
    alive "$(cat "$kdir/pid")" || { tail -20 "$kdir/kamailio.log" >&2; die "kamailio did not start"; }
    sleep 0.2
  done
  die "kamailio does not answer on 127.0.0.1:$SIP_PORT (log: $kdir/kamailio.log)"
}

status() {
  local kpid
  kpid=$(cat "$RUN/kamailio/pid" 2>/dev/null || true)
  if alive "$kpid"; then
    say "kamailio  pid $kpid  127.0.0.1:$SIP_PORT  OPTIONS: $("$PY" scripts/cluster_parts.py probe "$SIP_PORT")"
  else
    say "kamailio  not running"
  fi
  if [ -n "${CLUSTER_STORAGE_URL:-}" ]; then
    say "store     $CLUSTER_STORAGE_URL (not started here)"
  elif [ -d "$PG_DIR/data" ]; then
    say "postgres  $("$PY" scripts/cluster_parts.py postgres-status "$PG_DIR")  (data $PG_DIR/data)"
  fi
  local dir
  for dir in $(node_dirs); do
    local pid port answer
    pid=$(node_pid "$dir")
    port=$(node_port "$dir")
    if alive "$pid"; then
      answer=$("$PY" scripts/cluster_parts.py probe "$port")
      case $answer in
        200) answer="200 (taking calls)" ;;
        503) answer="503 (draining)" ;;
      esac
      say "$(basename "$dir")    pid $pid  127.0.0.1:$port  OPTIONS: $answer"
    else
      say "$(basename "$dir")    not running  (127.0.0.1:$port)"
    fi
  done
}

stop_node() {  # DIR [--now]
  local dir=$1 pid
  pid=$(node_pid "$dir")
  alive "$pid" || return 0
  if [ "${2:-}" = --now ]; then
    "$IVR" --config "$dir/config.toml" drain --now
  else
    "$IVR" --config "$dir/config.toml" drain
  fi
}

stop() {
  local dir pids=()
  for dir in $(node_dirs); do
    stop_node "$dir" "${1:-}" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  local kpid
  kpid=$(cat "$RUN/kamailio/pid" 2>/dev/null || true)
  if alive "$kpid"; then
    kill -TERM "$kpid"
    for _ in $(seq 1 50); do alive "$kpid" || break; sleep 0.1; done
    say "kamailio stopped"
  fi
  rm -f "$RUN/kamailio/pid"
  # the nodes have gone (their drain wrote their last rows): the store goes last
  if [ -z "${CLUSTER_STORAGE_URL:-}" ] && [ -d "$PG_DIR/data" ]; then
    say "postgresql $("$PY" scripts/cluster_parts.py postgres-stop "$PG_DIR") (its data stays in $PG_DIR)"
  fi
}

restart() {  # K: drain node K, then start it again (one step of a rolling restart)
  local dir="$RUN/node-${1:?which node? restart K}"
  [ -f "$dir/config.toml" ] || die "no $dir (scripts/cluster.sh start first)"
  stop_node "$dir"
  start_node "$dir"
}

case "${1:-}" in
  start) start "${2:-2}" ;;
  status) status ;;
  stop) stop "${2:-}" ;;
  restart) restart "${2:-}" ;;
  *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
