#!/usr/bin/env bash
# Proxy benchmark: olive vs nginx in front of the same tiny upstream.
#
#   bench/proxy.sh
#
# What it does:
#   - installs nginx and wrk from Debian if they are missing (apt-get update
#     only when something has to be installed);
#   - builds `target/release/olive` (only when olive is a target) and the
#     `bench_upstream` example in release;
#   - makes a self-signed ECDSA P-256 certificate with the openssl CLI;
#   - starts the upstream (127.0.0.1:18000), nginx (http 18081, https 18444)
#     and olive (http 18080, https 18443), each with a generated config in a
#     temporary directory, and waits until each one answers;
#   - runs `wrk --latency` in interleaved rounds: for each round, for each
#     scheme, every target once (the target order rotates between rounds);
#   - prints a Markdown table of medians (req/s, p99 latency), the req/s
#     spread over the rounds, and the ratios to nginx, and keeps every raw wrk output in bench/results/<timestamp>/.
#
# Environment (defaults in brackets):
#   TARGETS      targets to measure, among "direct olive nginx" [direct olive nginx].
#                "direct" is wrk straight at the upstream (http only).
#                Until olive serves, run with TARGETS="direct nginx".
#   SCHEMES      "http https" [http https]
#   ROUNDS       interleaved rounds [3]
#   DURATION     seconds per wrk run [10]
#   WARMUP       seconds of unrecorded warm-up per target and scheme, 0 for none [2]
#   CONNECTIONS  wrk -c [64]
#   THREADS      wrk -t [2]
#   BODY_BYTES   upstream response body size [13]
#   CALLGRIND=1  count instructions instead of timing (below)
#   NO_BUILD=1   skip cargo build (use the binaries already in target/release)
#   KEEP_TMP=1   keep the temporary directory (configs, logs, certificate)
#
# CALLGRIND=1: olive (one worker) and nginx (one process, no master) run
# under `valgrind --tool=callgrind`; for each target and scheme, after a
# 3 s warm-up the counters are zeroed, wrk runs DURATION seconds with one
# thread and 8 connections, and the instructions executed are divided by
# the requests wrk counted. Instructions do not depend on how busy the
# machine is, so this compares the proxies' own cost where timings are
# noisy. Needs valgrind (installed if missing).
#
# Everything listens on loopback only. Nothing is pinned to CPUs: on a small
# machine wrk, the proxy and the upstream share the same cores, so compare
# the ratios, not the absolute figures, with another machine's.
set -euo pipefail

TARGETS=${TARGETS:-direct olive nginx}
SCHEMES=${SCHEMES:-http https}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
BODY_BYTES=${BODY_BYTES:-13}
START_TIMEOUT=${START_TIMEOUT:-15}
CALLGRIND=${CALLGRIND:-0}
# Under callgrind: one worker each, a light load, and a slower start.
launch=()
nginx_workers="worker_processes auto;"
olive_workers=""
if [[ $CALLGRIND == 1 ]]; then
  TARGETS=${TARGETS/direct/}
  THREADS=1 CONNECTIONS=8
  START_TIMEOUT=$((START_TIMEOUT * 6))
  launch=(valgrind --tool=callgrind --collect-atstart=yes)
  nginx_workers="worker_processes 1;
master_process off;"
  olive_workers="workers = 1"
fi

UPSTREAM_PORT=18000
OLIVE_HTTP_PORT=18080
OLIVE_HTTPS_PORT=18443
NGINX_HTTP_PORT=18081
NGINX_HTTPS_PORT=18444

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh



for t in $TARGETS; do
  case $t in direct | olive | nginx) ;; *) die "unknown target '$t' in TARGETS (direct, olive, nginx)" ;; esac
done
for s in $SCHEMES; do
  case $s in http | https) ;; *) die "unknown scheme '$s' in SCHEMES (http, https)" ;; esac
done
for v in ROUNDS DURATION WARMUP CONNECTIONS THREADS BODY_BYTES START_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
((ROUNDS > 0 && DURATION > 0)) || die "ROUNDS and DURATION must be at least 1"

# ---------------------------------------------------------------- tools

install_missing() {
  local missing=()
  command -v nginx > /dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
  command -v wrk > /dev/null || missing+=(wrk)
  command -v openssl > /dev/null || missing+=(openssl)
  command -v curl > /dev/null || missing+=(curl)
  [[ $CALLGRIND == 1 ]] && ! command -v valgrind > /dev/null && missing+=(valgrind)
  ((${#missing[@]} == 0)) && return
  apt_install "${missing[@]}"
}

install_missing
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# ---------------------------------------------------------------- build

if [[ ${NO_BUILD:-0} != 1 ]]; then
  build=(cargo build --release --example bench_upstream)
  has_target olive && build+=(--bin olive)
  log "${build[*]}"
  "${build[@]}" || die "build failed (olive still in progress? try TARGETS=\"direct nginx\")"
fi
UPSTREAM_BIN=$ROOT/target/release/examples/bench_upstream
OLIVE_BIN=$ROOT/target/release/olive
[[ -x $UPSTREAM_BIN ]] || die "$UPSTREAM_BIN is missing"
if has_target olive; then
  [[ -x $OLIVE_BIN ]] || die "$OLIVE_BIN is missing; olive does not build yet? try TARGETS=\"direct nginx\""
fi

# ---------------------------------------------------------------- processes

make_tmp olive-bench


log "certificate in $TMP"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2> "$TMP/openssl.log" ||
  { cat "$TMP/openssl.log" >&2; die "openssl could not make a certificate"; }

log "upstream on 127.0.0.1:$UPSTREAM_PORT"
"$UPSTREAM_BIN" --bind "127.0.0.1:$UPSTREAM_PORT" --body-bytes "$BODY_BYTES" > "$TMP/upstream.log" 2>&1 &
PIDS+=($!)
wait_http upstream "$!" "http://127.0.0.1:$UPSTREAM_PORT/" 200

if has_target nginx; then
  mkdir -p "$TMP/nginx"
  # nginx >= 1.25.1 has an `http2` directive; older ones only enable HTTP/2
  # with a `listen ... http2` parameter, which we leave out.
  nginx_version=$("$NGINX" -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
  http2_off=""
  if [[ $(printf '%s\n1.25.1\n' "$nginx_version" | sort -V | head -n 1) == 1.25.1 ]]; then
    http2_off="http2 off;"
  fi
  user_line=""
  ((EUID == 0)) && user_line="user root;"
  cat > "$TMP/nginx/nginx.conf" << EOF
$user_line
$nginx_workers
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;

    # Steady-state keep-alive on both sides: the default of 1000 requests per
    # connection would add a reconnect (and a TLS handshake) every 1000
    # requests, which measures something else.
    keepalive_timeout 65s;
    keepalive_requests 1000000;

    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:$NGINX_HTTP_PORT;
        listen 127.0.0.1:$NGINX_HTTPS_PORT ssl;
        $http2_off
        server_name localhost;

        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 1h;

        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
EOF
  "$NGINX" -t -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" > "$TMP/nginx-t.log" 2>&1 ||
    { cat "$TMP/nginx-t.log" >&2; die "nginx rejected its config"; }
  log "nginx $nginx_version on 127.0.0.1:$NGINX_HTTP_PORT and :$NGINX_HTTPS_PORT (tls)"
  "${launch[@]}" ${launch:+--callgrind-out-file="$TMP/callgrind-nginx.out"} "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" >> "$TMP/nginx.log" 2>&1 &
  NGINX_PID=$!
  PIDS+=($!)
  wait_http nginx "$!" "http://127.0.0.1:$NGINX_HTTP_PORT/" 200
  wait_http nginx "${PIDS[-1]}" "https://127.0.0.1:$NGINX_HTTPS_PORT/" 200
fi

if has_target olive; then
  cat > "$TMP/olive.toml" << EOF
[server]
access_log = false
log_level = "warn"
$olive_workers

[rate_limits]
# wrk is one address; nginx runs without limit_req. A rate far above the
# load keeps olive's check (a map lookup per request) in the measurement.
http_per_ip = 100000000
http_burst = 100000000

[[listener]]
name = "http"
kind = "http"
bind = "127.0.0.1:$OLIVE_HTTP_PORT"

[[listener]]
name = "https"
kind = "https"
bind = "127.0.0.1:$OLIVE_HTTPS_PORT"

[[certificate]]
cert = "$TMP/cert.pem"
key = "$TMP/key.pem"

[[upstream]]
name = "app"
addresses = ["127.0.0.1:$UPSTREAM_PORT"]

[[route]]
path = "/"
proxy.upstream = "app"
proxy.compress = false
EOF
  log "olive on 127.0.0.1:$OLIVE_HTTP_PORT and :$OLIVE_HTTPS_PORT (tls)"
  "${launch[@]}" ${launch:+--callgrind-out-file="$TMP/callgrind-olive.out"} "$OLIVE_BIN" serve --config "$TMP/olive.toml" > "$TMP/olive.log" 2>&1 &
  OLIVE_PID=$!
  PIDS+=($!)
  wait_http olive "$!" "http://127.0.0.1:$OLIVE_HTTP_PORT/" 200
  wait_http olive "${PIDS[-1]}" "https://127.0.0.1:$OLIVE_HTTPS_PORT/" 200
fi

# ---------------------------------------------------------------- measure

url_for() { # TARGET SCHEME
  case $1/$2 in
    direct/http) echo "http://127.0.0.1:$UPSTREAM_PORT/" ;;
    olive/http) echo "http://127.0.0.1:$OLIVE_HTTP_PORT/" ;;
    olive/https) echo "https://127.0.0.1:$OLIVE_HTTPS_PORT/" ;;
    nginx/http) echo "http://127.0.0.1:$NGINX_HTTP_PORT/" ;;
    nginx/https) echo "https://127.0.0.1:$NGINX_HTTPS_PORT/" ;;
    *) echo "" ;; # direct/https: the upstream speaks plain HTTP only
  esac
}

# Requests/sec from a wrk output file.
wrk_rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
# The 99% line of `--latency`, converted to milliseconds.
wrk_p99_ms() {
  awk '$1 == "99%" {
    v = $2; unit = v; sub(/^[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
    if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000; else if (unit == "m") v *= 60000
    printf "%.3f\n", v }' "$1"
}
# Non-2xx responses plus socket errors: any of these makes the run suspect.
wrk_errors() {
  awk '/Non-2xx or 3xx responses:/ { n += $NF }
       /Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
       END { print n + 0 }' "$1"
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

read -r -a target_list <<< "$TARGETS"
RESULTS=$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS"
cp "$TMP"/*.toml "$TMP"/nginx/nginx.conf "$RESULTS"/ 2> /dev/null || true

run_wrk() { # DURATION URL OUTFILE
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$1"s --latency "$2" > "$3" 2>&1 || { cat "$3" >&2; die "wrk failed on $2"; }
}

if [[ $CALLGRIND == 1 ]]; then
  {
    echo "callgrind: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s after a 3 s warm-up, one olive worker, one nginx process;" \
      "${BODY_BYTES}-byte body; $(git rev-parse --short HEAD 2> /dev/null || echo '?'), $("$NGINX" -v 2>&1 | sed 's/.*: //')"
    echo
    echo "| target | scheme | requests | instructions per request |"
    echo "|---|---|---:|---:|"
    for scheme in $SCHEMES; do
      for target in "${target_list[@]}"; do
        url=$(url_for "$target" "$scheme")
        [[ -n $url ]] || continue
        pid=$OLIVE_PID
        [[ $target == nginx ]] && pid=$NGINX_PID
        run_wrk 3 "$url" "$TMP/warmup.txt"
        callgrind_control -z "$pid" > /dev/null 2>&1
        out=$RESULTS/$target-$scheme-callgrind.txt
        run_wrk "$DURATION" "$url" "$out"
        callgrind_control -d "$pid" > /dev/null 2>&1
        sleep 1
        dump=$(ls -t "$TMP/callgrind-$target.out".* | head -n 1)
        instructions=$(callgrind_annotate "$dump" 2> /dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
        requests=$(awk '/requests in/ { print $1 }' "$out")
        log "$target $scheme: $instructions instructions, $requests requests"
        printf '| %s | %s | %s | %.0f |\n' "$target" "$scheme" "$requests" "$((instructions / requests))"
      done
    done
  } > "$RESULTS/summary.md"
  echo
  cat "$RESULTS/summary.md"
  exit 0
fi

if ((WARMUP > 0)); then
  for scheme in $SCHEMES; do
    for target in "${target_list[@]}"; do
      url=$(url_for "$target" "$scheme")
      [[ -n $url ]] || continue
      log "warm-up $target $scheme (${WARMUP}s)"
      run_wrk "$WARMUP" "$url" "$TMP/warmup.txt"
    done
  done
fi

n=${#target_list[@]}
for ((round = 1; round <= ROUNDS; round++)); do
  for scheme in $SCHEMES; do
    for ((i = 0; i < n; i++)); do
      # Rotate the order each round so that no target always runs first.
      target=${target_list[$(((i + round - 1) % n))]}
      url=$(url_for "$target" "$scheme")
      [[ -n $url ]] || continue
      out=$RESULTS/$target-$scheme-r$round.txt
      run_wrk "$DURATION" "$url" "$out"
      errors=$(wrk_errors "$out")
      log "round $round/$ROUNDS $target $scheme: $(wrk_rps "$out") req/s, p99 $(wrk_p99_ms "$out") ms, errors $errors"
    done
  done
done

# ---------------------------------------------------------------- report

{
  echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency, $ROUNDS round(s), ${BODY_BYTES}-byte body," \
    "$(nproc) CPU(s) shared by wrk, proxy and upstream; $(git rev-parse --short HEAD 2> /dev/null || echo '?')," \
    "$("$NGINX" -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }')"
  echo
  echo "| target | scheme | median req/s | req/s min–max | median p99 (ms) | req/s vs nginx | p99 vs nginx | errors |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  for scheme in $SCHEMES; do
    nginx_rps="" nginx_p99=""
    if has_target nginx; then
      nginx_rps=$(for f in "$RESULTS"/nginx-"$scheme"-r*.txt; do wrk_rps "$f"; done | median)
      nginx_p99=$(for f in "$RESULTS"/nginx-"$scheme"-r*.txt; do wrk_p99_ms "$f"; done | median)
    fi
    for target in "${target_list[@]}"; do
      [[ -n $(url_for "$target" "$scheme") ]] || continue
      files=("$RESULTS/$target-$scheme"-r*.txt)
      rps=$(for f in "${files[@]}"; do wrk_rps "$f"; done | median)
      p99=$(for f in "${files[@]}"; do wrk_p99_ms "$f"; done | median)
      range=$(for f in "${files[@]}"; do wrk_rps "$f"; done | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f–%.0f", lo, hi }')
      errors=$(for f in "${files[@]}"; do wrk_errors "$f"; done | awk '{ n += $1 } END { print n + 0 }')
      ratio_rps="-" ratio_p99="-"
      if [[ -n $nginx_rps ]]; then
        ratio_rps=$(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN { printf "%.2f", a / b }')
        ratio_p99=$(awk -v a="$p99" -v b="$nginx_p99" 'BEGIN { printf "%.2f", a / b }')
      fi
      printf '| %s | %s | %.0f | %s | %.2f | %s | %s | %s |\n' "$target" "$scheme" "$rps" "$range" "$p99" "$ratio_rps" "$ratio_p99" "$errors"
    done
  done
} > "$RESULTS/summary.md"

echo
cat "$RESULTS/summary.md"
echo
log "raw wrk output in ${RESULTS#"$ROOT"/}"
