#!/usr/bin/env bash
# Fan-out benchmark: olive's live hub vs Pushpin, with the same load client.
#
#   bench/fanout.sh
#
# What it does:
#   - installs pushpin from Debian if it is missing (apt-get update only when
#     something has to be installed; a policy-rc.d keeps the package from
#     starting its system service);
#   - builds `target/release/olive` and the `fanout_client` example in release;
#   - raises `ulimit -n` to the hard limit (each side of 19,000 connections
#     needs 19,000 descriptors);
#   - for each scenario (SUBSCRIBERS × KEYS) and each target, starts a fresh
#     server with a generated config in a temporary directory, connects the
#     subscribers over several loopback source addresses, measures the
#     server's RSS before and after (RSS per idle subscribed connection),
#     publishes RATE messages/s for DURATION s over HTTP, waits up to DRAIN s
#     for the deliveries, and stops the server. A fresh server per scenario
#     keeps one scenario's heap out of the next one's RSS figure;
#   - then holds HOLD idle connections to a fresh olive for HOLD_DURATION s
#     (failures, drops, RSS per connection);
#   - prints a Markdown table and keeps every raw JSON report, the generated
#     configs and the server logs in bench/results/<timestamp>/.
#
# Targets:
#   olive-memory  olive with the embedded broker; publish: POST /olive/publish
#                 on the admin listener.
#   olive-amqp    olive with `live.broker = "amqp"`; only run when olive has an
#                 AMQP broker (src/broker/amqp.rs), "pending" rows otherwise.
#                 Needs RabbitMQ on 127.0.0.1:5672. AMQP_LIVE_EXTRA adds lines
#                 to the [live] table of its config.
#   pushpin       Pushpin (Debian package, its default config apart from ports,
#                 paths, log level and the handler's message_rate/message_hwm
#                 throttle, see PUSHPIN_MESSAGE_RATE) in front of
#                 bench/grip_backend.py over WebSocket-over-HTTP; publish: its
#                 HTTP API on :5561.
#
# Environment (defaults in brackets):
#   TARGETS        [olive-memory olive-amqp pushpin]
#   SUBSCRIBERS    subscriber counts [1000 10000]
#   KEYS           key counts [1 100]
#   RATE           messages per second, in total [20]
#   DURATION       seconds of publishing per scenario [20]
#   DRAIN          seconds to wait for late deliveries; later ones count as lost [30]
#   HOLD           idle connections held against olive, 0 to skip [19000]
#   HOLD_DURATION  seconds they are held [20]
#   SOURCE_IPS     client source addresses [127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4]
#   CLIENT_THREADS client runtime threads, 0: one per CPU [0]
#   CONNECT_CONCURRENCY  connection attempts in flight, olive [200]
#   PUSHPIN_CONNECT_CONCURRENCY  the same for pushpin [20]: each websocket
#                  open is an HTTP round trip to the GRIP backend through zurl,
#                  and at 200 in flight pushpin answers many with 502
#   PUSHPIN_MESSAGE_RATE  pushpin handler's message_rate and message_hwm
#                  [1000000]; "default" keeps the package's 2500 and 25000,
#                  which hold fan-out to about 2,000 deliveries/s
#   PROFILE        "SUBSCRIBERSxKEYS" scenario to record olive-memory with
#                  `perf record -g` (e.g. 10000x1), empty for none []
#   NO_BUILD=1     skip cargo build
#   KEEP_TMP=1     keep the temporary directory
#
# Everything runs on loopback, client and servers on the same cores: compare
# targets within one run, not with another machine's figures.
set -euo pipefail

TARGETS=${TARGETS:-olive-memory olive-amqp pushpin}
SUBSCRIBERS=${SUBSCRIBERS:-1000 10000}
KEYS=${KEYS:-1 100}
RATE=${RATE:-20}
DURATION=${DURATION:-20}
DRAIN=${DRAIN:-30}
HOLD=${HOLD:-19000}
HOLD_DURATION=${HOLD_DURATION:-20}
SOURCE_IPS=${SOURCE_IPS:-127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4}
CLIENT_THREADS=${CLIENT_THREADS:-0}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-200}
PUSHPIN_CONNECT_CONCURRENCY=${PUSHPIN_CONNECT_CONCURRENCY:-20}
PUSHPIN_MESSAGE_RATE=${PUSHPIN_MESSAGE_RATE:-1000000}
PROFILE=${PROFILE:-}
START_TIMEOUT=${START_TIMEOUT:-20}

OLIVE_HTTP_PORT=18090
OLIVE_ADMIN_PORT=18091
PUSHPIN_PORT=18093
PUSHPIN_PUBLISH_PORT=5561 # fixed by pushpin's default handler config
GRIP_PORT=18095

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh


for t in $TARGETS; do
  case $t in olive-memory | olive-amqp | pushpin) ;; *) die "unknown target '$t' (olive-memory, olive-amqp, pushpin)" ;; esac
done
[[ $PUSHPIN_MESSAGE_RATE =~ ^([0-9]+|default)$ ]] || die "PUSHPIN_MESSAGE_RATE must be a number or 'default'"
for v in RATE DURATION DRAIN HOLD HOLD_DURATION CLIENT_THREADS START_TIMEOUT CONNECT_CONCURRENCY PUSHPIN_CONNECT_CONCURRENCY; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
for v in $SUBSCRIBERS $KEYS; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || die "SUBSCRIBERS and KEYS take whole numbers, got '$v'"
done

# olive-amqp runs only once olive has an AMQP broker; until then the config
# accepts `broker = "amqp"` but the hub still uses the in-process broker.
AMQP_READY=0
[[ -f src/broker/amqp/mod.rs ]] && AMQP_READY=1

# ---------------------------------------------------------------- tools

install_missing() {
  local missing=()
  has_target pushpin && ! command -v pushpin > /dev/null && missing+=(pushpin)
  command -v curl > /dev/null || missing+=(curl)
  command -v jq > /dev/null || missing+=(jq)
  command -v python3 > /dev/null || missing+=(python3)
  if [[ -n $PROFILE ]] && ! command -v perf > /dev/null; then missing+=(linux-perf); fi
  ((${#missing[@]} == 0)) && return
  apt_install "${missing[@]}"
  # Should a service manager have started it anyway, stop it: it holds :5561.
  if [[ " ${missing[*]} " == *" pushpin "* ]] && command -v service > /dev/null; then
    "${sudo[@]}" service pushpin stop > /dev/null 2>&1 || true
  fi
}

install_missing

# ---------------------------------------------------------------- build

if [[ ${NO_BUILD:-0} != 1 ]]; then
  log "cargo build --release --bin olive --example fanout_client"
  cargo build --release --bin olive --example fanout_client || die "build failed"
fi
OLIVE_BIN=$ROOT/target/release/olive
CLIENT_BIN=$ROOT/target/release/examples/fanout_client
[[ -x $OLIVE_BIN && -x $CLIENT_BIN ]] || die "$OLIVE_BIN or $CLIENT_BIN is missing"

# ---------------------------------------------------------------- limits

# Each process (client, olive, pushpin's condure) holds one descriptor per
# connection. Raise the soft limit to the hard one; as root try higher first.
ulimit -n 65536 2> /dev/null || ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
NOFILE=$(ulimit -n)
log "open files limit: $NOFILE per process"
max_subscribers=$HOLD
for n in $SUBSCRIBERS; do ((n > max_subscribers)) && max_subscribers=$n; done
if [[ $NOFILE != unlimited ]] && ((max_subscribers + 100 > NOFILE)); then
  log "warning: $max_subscribers connections need more than the $NOFILE descriptors a process may open"
fi
# olive's limits.max_connections defaults to 10,000 per listener; the config
# below raises it to the descriptor limit so that olive is bounded by the
# same thing as everyone else.
OLIVE_MAX_CONNECTIONS=$NOFILE
[[ $NOFILE == unlimited ]] && OLIVE_MAX_CONNECTIONS=1000000

# Each source address has about 28k ephemeral ports; say so if too few.
IFS=, read -r -a source_list <<< "$SOURCE_IPS"
ports=$(awk '{ print $2 - $1 + 1 }' /proc/sys/net/ipv4/ip_local_port_range)
if ((max_subscribers > ${#source_list[@]} * ports)); then
  die "$max_subscribers connections need more than ${#source_list[@]} source addresses × $ports ports (SOURCE_IPS)"
fi

# ---------------------------------------------------------------- processes

make_tmp olive-fanout
RESULTS=$ROOT/bench/results/fanout-$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS"



# start_olive BROKER: a fresh olive; sets SERVER_PIDS.
start_olive() {
  local broker=$1 extra=""
  [[ $broker == amqp ]] && extra=${AMQP_LIVE_EXTRA:-}
  cat > "$TMP/olive-$broker.toml" << EOF
[server]
access_log = false
log_level = "warn"

[limits]
# Default 10,000 per listener; raised to the descriptor limit.
max_connections = $OLIVE_MAX_CONNECTIONS
# Default 256 per address; every subscriber here comes from SOURCE_IPS.
max_connections_per_ip = $OLIVE_MAX_CONNECTIONS

[rate_limits]
# Every subscriber and the publisher come from SOURCE_IPS: per-address
# rates far above the load, so the checks run but never refuse.
http_per_ip = 1000000
http_burst = 1000000
connects_per_ip = 1000000
connects_burst = 1000000
publishes_per_user = 1000000
publishes_burst = 1000000

[live]
broker = "$broker"
$extra

[[listener]]
name = "http"
kind = "http"
bind = "127.0.0.1:$OLIVE_HTTP_PORT"

[[listener]]
name = "admin"
kind = "admin"
bind = "127.0.0.1:$OLIVE_ADMIN_PORT"

[[route]]
path = "/olive"
live = {}

# The bench clients subscribe without tokens; publishing is on the admin listener.
[auth.anonymous]
subscribe = ["olive.bench.#"]
EOF
  "$OLIVE_BIN" serve --config "$TMP/olive-$broker.toml" >> "$TMP/olive.log" 2>&1 &
  PIDS+=($!)
  SERVER_PIDS=$!
  wait_http olive "$!" "http://127.0.0.1:$OLIVE_ADMIN_PORT/healthz"
  wait_http olive "$SERVER_PIDS" "http://127.0.0.1:$OLIVE_HTTP_PORT/olive/ws"
}

# start_pushpin: the GRIP backend and a fresh pushpin; sets SERVER_PIDS to
# pushpin's own processes (condure, zurl, proxy, handler), not the backend's.
start_pushpin() {
  local dir=$TMP/pushpin
  rm -rf "$dir"
  mkdir -p "$dir/run" "$dir/log"
  echo "* localhost:$GRIP_PORT,over_http" > "$dir/routes"
  # The package's config, with our ports and paths. Debian's internal.conf
  # points the proxy at a system zurl (/var/run/zurl); the runner starts
  # our own zurl in rundir instead. Log level 1 (warnings): level 2 logs
  # every request and every publish. The handler's message_rate (2500/s)
  # and message_hwm (25000) throttle fan-out to ~2k deliveries/s; they are
  # raised unless PUSHPIN_MESSAGE_RATE=default.
  local rate_edits=()
  if [[ $PUSHPIN_MESSAGE_RATE != default ]]; then
    rate_edits=(-e "s|^message_rate=.*|message_rate=$PUSHPIN_MESSAGE_RATE|" -e "s|^message_hwm=.*|message_hwm=$PUSHPIN_MESSAGE_RATE|")
  fi
  sed "${rate_edits[@]}" -e "s|^rundir=.*|rundir=$dir/run|" \
    -e "s|^logdir=.*|logdir=$dir/log|" \
    -e "s|^http_port=.*|http_port=$PUSHPIN_PORT|" \
    -e "s|^log_level=.*|log_level=1|" \
    -e "s|^services=.*|services=condure,zurl,pushpin-proxy,pushpin-handler|" \
    -e "s|^routesfile=.*|routesfile=$dir/routes|" \
    -e "s|^push_in_http_port=.*|push_in_http_port=$PUSHPIN_PUBLISH_PORT|" \
    -e '/^\[proxy\]/a zurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in\nzurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream\nzurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out' \
    /etc/pushpin/pushpin.conf > "$dir/pushpin.conf"
  python3 "$ROOT/bench/grip_backend.py" "$GRIP_PORT" > "$TMP/grip.log" 2>&1 &
  PIDS+=($!)
  wait_http grip "$!" "http://127.0.0.1:$GRIP_PORT/"
  pushpin --config "$dir/pushpin.conf" --merge-output > "$TMP/pushpin.log" 2>&1 &
  local runner=$!
  PIDS+=($runner)
  wait_http pushpin "$runner" "http://127.0.0.1:$PUSHPIN_PORT/"
  wait_http pushpin "$runner" "http://127.0.0.1:$PUSHPIN_PUBLISH_PORT/"
  SERVER_PIDS=$(pgrep -d, -P "$runner")
  [[ -n $SERVER_PIDS ]] || die "pushpin started no processes"
  # The runner stops its children on TERM; should one linger, it goes too.
  IFS=, read -r -a children <<< "$SERVER_PIDS"
  PIDS+=("${children[@]}")
}

# run_client OUT ARGS...: the load client; its JSON report goes to OUT.
run_client() {
  local out=$1
  shift
  "$CLIENT_BIN" --source-ips "$SOURCE_IPS" --threads "$CLIENT_THREADS" "$@" > "$out" 2> "${out%.json}.log" ||
    {
      cat "${out%.json}.log" >&2
      die "fanout_client failed"
    }
}

pending_row() { # TARGET SUBSCRIBERS KEYS
  jq -cn --arg t "$1" --argjson n "$2" --argjson k "$3" '{label: $t, subscribers: $n, keys: $k, pending: true}'
}

scenario() { # TARGET SUBSCRIBERS KEYS
  local target=$1 n=$2 k=$3 out=$RESULTS/$1-$2x$3.json
  if [[ $target == olive-amqp && $AMQP_READY != 1 ]]; then
    log "$target ${n}x$k: pending (olive has no AMQP broker yet)"
    pending_row "$target" "$n" "$k" > "$out"
    return
  fi
  local ws_url publish_url client_target concurrency=$CONNECT_CONCURRENCY
  case $target in
    olive-*)
      start_olive "${target#olive-}"
      ws_url=ws://127.0.0.1:$OLIVE_HTTP_PORT/olive/ws
      publish_url=http://127.0.0.1:$OLIVE_ADMIN_PORT/olive/publish
      client_target=olive
      ;;
    pushpin)
      start_pushpin
      ws_url=ws://127.0.0.1:$PUSHPIN_PORT/ws
      publish_url=http://127.0.0.1:$PUSHPIN_PUBLISH_PORT/publish/
      client_target=pushpin
      concurrency=$PUSHPIN_CONNECT_CONCURRENCY
      ;;
  esac
  local perf_pid=""
  if [[ $target == olive-memory && $PROFILE == "${n}x$k" ]]; then
    perf record -F 499 -g -o "$RESULTS/perf-$target-${n}x$k.data" -p "$SERVER_PIDS" > "$RESULTS/perf-record.log" 2>&1 &
    perf_pid=$!
  fi
  log "$target: $n subscribers on $k key(s), $RATE msg/s for ${DURATION}s"
  run_client "$out" --connect-concurrency "$concurrency" --target "$client_target" --label "$target" --ws-url "$ws_url" --publish-url "$publish_url" \
    --subscribers "$n" --keys "$k" --rate "$RATE" --duration "$DURATION" --drain "$DRAIN" --server-pid "$SERVER_PIDS"
  if [[ -n $perf_pid ]]; then
    kill -INT "$perf_pid" 2> /dev/null || true
    wait "$perf_pid" 2> /dev/null || true
    perf report -i "$RESULTS/perf-$target-${n}x$k.data" --no-children --percent-limit 1.5 --stdio 2> /dev/null |
      grep -v '^$' | head -n 80 > "$RESULTS/perf-$target-${n}x$k.txt" || true
  fi
  jq -r '"    connected \(.connected)/\(.subscribers), delivered \(.delivered)/\(.expected), \(.deliveries_per_s)/s, p50 \(.p50_ms) ms, p99 \(.p99_ms) ms, max \(.max_ms) ms, RSS/conn \(.rss_per_conn_bytes) B, CPU µs/delivery server \(.server_us_per_delivery) client \(.client_us_per_delivery)"' "$out" >&2
  stop_all
}

# ---------------------------------------------------------------- measure

read -r -a target_list <<< "$TARGETS"
for n in $SUBSCRIBERS; do
  for k in $KEYS; do
    for target in "${target_list[@]}"; do
      scenario "$target" "$n" "$k"
    done
  done
done

if ((HOLD > 0)); then
  start_olive memory
  log "olive-memory: holding $HOLD idle connections for ${HOLD_DURATION}s"
  run_client "$RESULTS/hold-olive-$HOLD.json" --target olive --label hold --ws-url "ws://127.0.0.1:$OLIVE_HTTP_PORT/olive/ws" \
    --subscribers "$HOLD" --keys 100 --rate 0 --duration "$HOLD_DURATION" --server-pid "$SERVER_PIDS"
  jq -r '"    connected \(.connected)/\(.subscribers), failed \(.failed), dropped \(.disconnected), RSS/conn \(.rss_per_conn_bytes) B"' \
    "$RESULTS/hold-olive-$HOLD.json" >&2
  stop_all
fi

cp "$TMP"/*.toml "$TMP"/*.log "$RESULTS"/ 2> /dev/null || true
cp "$TMP/pushpin/pushpin.conf" "$RESULTS"/ 2> /dev/null || true

# ---------------------------------------------------------------- report

{
  echo "$RATE msg/s for ${DURATION}s per scenario (drain ${DRAIN}s), $(nproc) CPU(s) shared by client and server," \
    "source addresses $SOURCE_IPS, open files $NOFILE; olive $(git rev-parse --short HEAD 2> /dev/null || echo '?')," \
    "$(command -v pushpin > /dev/null && pushpin --version 2> /dev/null | head -n 1 || echo 'pushpin not installed')" \
    "(message_rate $PUSHPIN_MESSAGE_RATE)"
  echo
  echo "| target | subscribers | keys | connected | failed | published | expected | delivered | lost | deliveries/s | p50 ms | p99 ms | max ms | RSS/conn KiB | CPU µs/delivery server | client |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for n in $SUBSCRIBERS; do
    for k in $KEYS; do
      for target in "${target_list[@]}"; do
        jq -r 'if .pending then "| \(.label) | \(.subscribers) | \(.keys) | pending | | | | | | | | | | | | |"
          else "| \(.label) | \(.subscribers) | \(.keys) | \(.connected) | \(.failed) | \(.published) | \(.expected) | \(.delivered) | \(.lost) | \(.deliveries_per_s) | \(.p50_ms) | \(.p99_ms) | \(.max_ms) | \(if .rss_per_conn_bytes then (.rss_per_conn_bytes / 1024 * 10 | round / 10) else "-" end) | \(.server_us_per_delivery // "-") | \(.client_us_per_delivery // "-") |" end' \
          "$RESULTS/$target-${n}x$k.json"
      done
    done
  done
  if ((HOLD > 0)); then
    echo
    echo "| idle hold | target | connected | failed | dropped while held | RSS/conn KiB |"
    echo "|---|---|---:|---:|---:|---:|"
    jq -r '"| \(.subscribers) × \(.duration_s)s | olive-memory | \(.connected) | \(.failed) | \(.disconnected) | \(if .rss_per_conn_bytes then (.rss_per_conn_bytes / 1024 * 10 | round / 10) else "-" end) |"' \
      "$RESULTS/hold-olive-$HOLD.json"
  fi
} > "$RESULTS/summary.md"

echo
cat "$RESULTS/summary.md"
echo
log "raw reports in ${RESULTS#"$ROOT"/}"
