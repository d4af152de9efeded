# Shared by the bench scripts (sourced, not run): logging, the processes a
# script starts (PIDS, their logs in $TMP/NAME.log), waiting for a server,
# and package installs.

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

PIDS=()

# stop_all: TERM every started process, give each 10 s to drain, then KILL.
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2> /dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2> /dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
  done
  PIDS=()
}

# wait_http NAME PID URL [STATUS]: until URL answers (with STATUS, when
# given), the process dies, or START_TIMEOUT passes.
wait_http() {
  local name=$1 pid=$2 url=$3 want=${4:-} deadline=$((SECONDS + START_TIMEOUT)) code
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2> /dev/null || {
      tail -n 20 "$TMP/$name.log" >&2 || true
      die "$name exited during start-up (log above)"
    }
    code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
    if [[ -n $want && $code == "$want" ]] || [[ -z $want && $code != 000 ]]; then
      return
    fi
    sleep 0.2
  done
  tail -n 20 "$TMP/$name.log" >&2 || true
  die "$name did not answer${want:+ $want} on $url within ${START_TIMEOUT}s"
}

# Installs Debian packages without letting them start system services:
# nginx would take port 80 and pushpin its fixed handler ports, and the
# benchmarks want only the binaries. A temporary policy-rc.d forbids the
# starts when the machine has none.
apt_install() {
  log "installing $* with apt-get"
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  local policy_added=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d > /dev/null
    "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
    policy_added=1
  fi
  local rc=0
  "${sudo[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" > /dev/null ||
    rc=$?
  ((policy_added)) && "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
  ((rc == 0)) || die "apt-get install $* failed"
}

# make_tmp NAME: a temporary directory in $TMP, removed on exit (with every
# process stop_all knows) unless KEEP_TMP=1; INT and TERM exit through it.
make_tmp() {
  TMP=$(mktemp -d "/tmp/$1.XXXXXX")
  trap cleanup_tmp EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

cleanup_tmp() {
  stop_all
  if [[ ${KEEP_TMP:-0} == 1 ]]; then
    log "kept $TMP"
  else
    rm -rf "$TMP"
  fi
}
