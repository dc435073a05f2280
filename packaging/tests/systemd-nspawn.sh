#!/usr/bin/env bash
# The Debian package under a real systemd: boots a debootstrap'd Debian in systemd-nspawn
# (sharing the host's loopback), installs target/debian/tokenkeeper_*.deb with dpkg -i, configures
# one account against a loopback token endpoint (`tokenkeeper demo` on the host) with its secret
# through LoadCredential=, and checks the service: active only once the token is on disk, the
# file's mode and owner, reload, the watchdog, the live security score, no secret in the journal,
# a clean stop that leaves the tokens, and a restart without a new login.
#
#   packaging/tests/systemd-nspawn.sh        (as root; the Debian tree is cached in target/nspawn)
set -euo pipefail
cd "$(dirname "$0")/../.."
top="$PWD"

fail() { echo "FAIL: $*" >&2; exit 1; }
say() { printf '  %s\n' "$*"; }

deb=$(ls -t target/debian/tokenkeeper_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || fail "no package in target/debian (run cargo deb first)"
cache="$top/target/nspawn"
tree="$cache/bookworm.tar"
mkdir -p "$cache"
if [ ! -f "$tree" ]; then
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
    mirror="${mirror:-http://deb.debian.org/debian}"
    echo "debootstrap from $mirror (once per cache)"
    rm -rf "$cache/base"
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,procps,iproute2,ca-certificates \
        bookworm "$cache/base" "$mirror" >"$cache/debootstrap.log" 2>&1 \
        || { tail -n 20 "$cache/debootstrap.log"; fail "debootstrap"; }
    tar -C "$cache/base" -cf "$tree.tmp" . && mv "$tree.tmp" "$tree"
    rm -rf "$cache/base"
fi

work=$(mktemp -d /var/tmp/tokenkeeper-nspawn.XXXXXX)
root="$work/root"
demo="$work/demo"
mkdir -p "$root"
tar -C "$root" -xf "$tree"
cp "$deb" "$root/var/tmp/tokenkeeper.deb"

nspawn_pid=""
demo_pid=""
cleanup() {
    if [ -n "${pid1:-}" ]; then
        nsenter -t "$pid1" -a systemctl poweroff >/dev/null 2>&1 || true
    fi
    if [ -n "$nspawn_pid" ]; then
        for _ in $(seq 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$nspawn_pid" 2>/dev/null || true
    fi
    [ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The token endpoint: the demo's, on the host's loopback (which the container shares).
target/debug/tokenkeeper demo --dir "$demo" >"$work/demo.log" 2>&1 &
demo_pid=$!
for _ in $(seq 100); do [ -f "$demo/config.toml" ] && break; sleep 0.1; done
[ -f "$demo/config.toml" ] || fail "the demo did not start: $(cat "$work/demo.log")"
base_url=$(sed -n 's/^base_url = "\(.*\)"/\1/p' "$demo/config.toml" | head -n 1)
client_id=$(sed -n '/^\[accounts.apinizer\]/,/^\[/s/^client_id = "\(.*\)"/\1/p' "$demo/config.toml")
secret=$(cat "$demo/secrets/apinizer-password")
[ -n "$base_url" ] && [ -n "$client_id" ] && [ -n "$secret" ] || fail "cannot read the demo's setup"

# Boot with cgroup2, so that the unit's cgroup settings really apply.
unshare -m --propagation private sh -c 'umount -R /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 cgroup2 /sys/fs/cgroup; SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 exec systemd-nspawn --quiet --register=no --keep-unit --system-call-filter=bpf -D "$0" -b' "$root" >"$work/boot.log" 2>&1 &
nspawn_pid=$!
pid1=""
for _ in $(seq 150); do
    pid1=$(pgrep -P "$nspawn_pid" -x systemd || true)
    if [ -n "$pid1" ] && nsenter -t "$pid1" -a test -S /run/systemd/private 2>/dev/null; then break; fi
    sleep 0.2
done
[ -n "$pid1" ] || fail "the container did not boot: $(cat "$work/boot.log")"
inside() { nsenter -t "$pid1" -a "$@"; }
for _ in $(seq 100); do
    state=$(inside systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 0.2
done
echo "booted ($state)"

inside dpkg -i /var/tmp/tokenkeeper.deb >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i"; }
say "installed: $(inside dpkg-query -W -f '${Package} ${Version}' tokenkeeper)"
[ "$(inside systemctl is-enabled tokenkeeper)" = "enabled" ] || fail "not enabled"
# No config yet: the unit waits (condition), it does not fail.
[ "$(inside systemctl is-active tokenkeeper || true)" != "failed" ] || fail "failed without a config"
inside test -f /etc/tokenkeeper/config.example.toml || fail "no example config"
[ "$(inside stat -c '%a %U %G' /etc/tokenkeeper/config.example.toml)" = "640 root tokenkeeper" ] \
    || fail "example config: $(inside stat -c '%a %U %G' /etc/tokenkeeper/config.example.toml)"

# One account, its secret through LoadCredential= (a file in /etc/tokenkeeper/credentials).
printf '%s\n' "$secret" | inside sh -c 'umask 077; cat > /etc/tokenkeeper/credentials/apinizer-secret'
inside sh -c "umask 027; cat > /etc/tokenkeeper/config.toml" <<CONFIG
[accounts.apinizer]
preset = "apinizer"
base_url = "$base_url"
client_id = "$client_id"
client_secret = { credential = "tokenkeeper_apinizer-secret" }
[[accounts.apinizer.outputs]]
path = "/run/tokenkeeper/apinizer.token"
mode = "0640"
CONFIG
inside chgrp tokenkeeper /etc/tokenkeeper/config.toml

# Type=notify: `systemctl start` returns once READY=1 came, which is after the first login, so
# the token is already on disk when it returns.
inside systemctl start tokenkeeper || { inside journalctl -u tokenkeeper --no-pager | tail -n 30; fail "start"; }
[ "$(inside systemctl is-active tokenkeeper)" = "active" ] || fail "not active"
inside test -s /run/tokenkeeper/apinizer.token || fail "active, but no token on disk yet"
say "active, token on disk: $(inside stat -c '%a %U %G' /run/tokenkeeper/apinizer.token)"
[ "$(inside stat -c '%a %U %G' /run/tokenkeeper/apinizer.token)" = "640 tokenkeeper tokenkeeper" ] \
    || fail "token file mode/owner"
status=$(inside systemctl show -p StatusText --value tokenkeeper)
[ "$status" = "1/1 accounts ready" ] || fail "status text: $status"
watchdog=$(inside systemctl show -p WatchdogUSec --value tokenkeeper)
[ "$watchdog" = "20s" ] || fail "watchdog: $watchdog"
say "status '$status', watchdog $watchdog"

# Reload: SIGHUP, RELOADING/READY, the daemon says so.
inside systemctl reload tokenkeeper || fail "reload"
for _ in $(seq 50); do
    inside journalctl -u tokenkeeper --no-pager | grep -q "config reloaded" && break; sleep 0.2
done
inside journalctl -u tokenkeeper --no-pager | grep -q "config reloaded" || fail "no reload in the journal"
[ "$(inside systemctl is-active tokenkeeper)" = "active" ] || fail "not active after reload"
say "reloaded"

# The live security score.
score=$(inside systemd-analyze security tokenkeeper --no-pager | sed -n 's/.*Overall exposure level for tokenkeeper.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "no exposure score from systemd-analyze security"
awk -v s="$score" 'BEGIN { exit !(s + 0 <= 1.5) }' || fail "live exposure $score"
say "live exposure $score"

# The secret never reaches the journal.
if inside journalctl --no-pager -o cat | grep -qF -- "$secret"; then fail "the secret is in the journal"; fi
token=$(inside cat /run/tokenkeeper/apinizer.token)
if inside journalctl --no-pager -o cat | grep -qF -- "$token"; then fail "the token is in the journal"; fi

# A clean stop leaves the tokens; a restart logs in no more.
logins=$(inside journalctl -u tokenkeeper --no-pager | grep -c "login succeeded")
inside systemctl stop tokenkeeper
[ "$(inside systemctl show -p Result --value tokenkeeper)" = "success" ] || fail "stop: $(inside systemctl show -p Result --value tokenkeeper)"
inside test -s /run/tokenkeeper/apinizer.token || fail "the token went with the stop"
inside systemctl start tokenkeeper || fail "restart"
# Log lines reach the journal by another way than READY: wait for them.
for _ in $(seq 100); do
    inside journalctl -u tokenkeeper --no-pager | grep -q "reusing the still-valid token" && break
    sleep 0.1
done
inside journalctl -u tokenkeeper --no-pager | grep -q "reusing the still-valid token" || fail "the restart did not reuse the token"
sleep 1
after=$(inside journalctl -u tokenkeeper --no-pager | grep -c "login succeeded")
[ "$after" = "$logins" ] || fail "the restart logged in again ($logins, then $after)"
[ "$(inside cat /run/tokenkeeper/apinizer.token)" = "$token" ] || fail "the token changed across the restart"
say "stop clean, token kept, restart reused it ($logins login)"
echo "systemd-nspawn: all checks passed"
