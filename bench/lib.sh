# Shared by the bench scripts (sourced, not run). The caller defines log
# and die.

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
