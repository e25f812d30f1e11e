#!/usr/bin/env bash
# Installs Prosody 0.12 from Debian's packages into a scratch directory (no system
# install, nothing committed), writes a plaintext benchmark config and N accounts,
# and runs it in the foreground. Usage:
#   benches/whatsapp/prosody.sh install            # download + unpack (idempotent)
#   benches/whatsapp/prosody.sh users N [PASSWORD] # accounts load-0..load-(N-1)
#   benches/whatsapp/prosody.sh run [PORT]         # foreground; pin with taskset
# Environment: PROSODY_ROOT (default /tmp/casebook-prosody).
set -euo pipefail

ROOT=${PROSODY_ROOT:-/tmp/casebook-prosody}
PKG=$ROOT/pkg
ETC=$ROOT/etc
DATA=$ROOT/data
DOMAIN=${PROSODY_DOMAIN:-localhost}

install() {
    if [ -x "$PKG/usr/bin/lua5.4" ] && [ -f "$PKG/usr/bin/prosody" ]; then
        return
    fi
    mkdir -p "$ROOT/debs" "$PKG"
    cd "$ROOT/debs"
    apt-get download prosody lua5.4 liblua5.4-0 lua-expat lua-filesystem lua-socket \
        lua-sec lua-unbound libunbound8 lua-readline 2>/dev/null ||
        apt-get download prosody lua5.4 liblua5.4-0 lua-expat lua-filesystem lua-socket lua-sec
    for deb in *.deb; do dpkg -x "$deb" "$PKG"; done
}

config() {
    local port=$1
    mkdir -p "$ETC/certs" "$DATA"
    # A plaintext benchmark config: internal_plain
    # storage of passwords, PLAIN over the unencrypted stream, no s2s, no TLS.
    cat > "$ETC/prosody.cfg.lua" <<CFG
pidfile = "$ROOT/prosody.pid"
daemonize = false
log = { { levels = { min = "warn" }, to = "console" } }
modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "offline"; "smacks"; "carbons"; "presence"; "message"; "iq" }
modules_disabled = { "s2s"; "tls"; "posix" }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
c2s_ports = { $port }
c2s_interfaces = { "127.0.0.1" }
network_backend = "epoll"
limits = {}
VirtualHost "$DOMAIN"
CFG
}

users() {
    local n=$1 password=${2:-load-pw}
    # Prosody's datamanager escapes every non-alphanumeric byte as %xx.
    local dir="$DATA/$(echo "$DOMAIN" | sed 's/\./%2e/g')/accounts"
    mkdir -p "$dir"
    for ((i = 0; i < n; i++)); do
        printf 'return { ["password"] = "%s"; };\n' "$password" > "$dir/load%2d$i.dat"
    done
    echo "$n accounts in $dir"
}

run() {
    local port=${1:-15222}
    install
    config "$port"
    # The packaged launcher hard-codes /usr and /etc: a copy points at our folders.
    sed -e "s|^CFG_SOURCEDIR=.*|CFG_SOURCEDIR='$PKG/usr/lib/prosody';|" \
        -e "s|^CFG_CONFIGDIR=.*|CFG_CONFIGDIR='$ETC';|" \
        -e "s|^CFG_PLUGINDIR=.*|CFG_PLUGINDIR='$PKG/usr/lib/prosody/modules/';|" \
        -e "s|^CFG_DATADIR=.*|CFG_DATADIR='$DATA';|" \
        "$PKG/usr/bin/prosody" > "$ROOT/prosody"
    cd "$ROOT"
    exec env LD_LIBRARY_PATH="$PKG/usr/lib/x86_64-linux-gnu" \
        LUA_PATH="$PKG/usr/share/lua/5.4/?.lua;$PKG/usr/share/lua/5.4/?/init.lua;;" \
        LUA_CPATH="$PKG/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;;" \
        "$PKG/usr/bin/lua5.4" "$ROOT/prosody"
}

case "${1:-}" in
install) install ;;
users) shift; users "$@" ;;
run) shift; run "$@" ;;
*) echo "usage: $0 install | users N [PASSWORD] | run [PORT]" >&2; exit 2 ;;
esac
