# shellcheck shell=bash
# Sourced by every script in scripts/: strict mode, the repository's paths,
# and the few steps more than one recipe takes.

set -euo pipefail

# The repository root: scripts run from anywhere, and the paths below
# (deploy/, target/, .run/) are relative to it.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# Pid files and logs of what the scripts start in the background.
# shellcheck disable=SC2034 # read by the scripts that source this file
RUN_DIR=$ROOT/.run
# Where cargo puts the binaries (CARGO_TARGET_DIR, as cargo reads it).
# shellcheck disable=SC2034 # read by the scripts that source this file
TARGET_DIR=${CARGO_TARGET_DIR:-target}
# Appended to apt_install's "missing" message (services.sh says where else to look).
missing_hint=""
# Set once apt-get update has run, so a script updates the lists once.
apt_updated=""

# Prints to stderr and stops: every failure message goes the same way.
die() {
    echo "$*" >&2
    exit 1
}

# Prints the tail of a process's log and stops: why a start failed is in its log.
die_with_log() {
    echo "$1" >&2
    tail -n 30 "$2" >&2
    exit 1
}

# The compose stacks are used only where a Docker engine answers, not just a client.
has_docker() {
    command -v docker >/dev/null && docker info >/dev/null 2>&1
}

# Whether something listens on 127.0.0.1:PORT, without curl or nc.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits up to 10 s for 127.0.0.1:PORT to listen: servers just started take a moment.
wait_for_port() {
    for _ in $(seq 1 50); do port_open "$1" && return 0; sleep 0.2; done
    port_open "$1"
}

# Whether the process in PIDFILE runs: the pid files say what the scripts started.
is_alive() {
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Polls URL (a /readyz) for up to TIMEOUT s until 2xx; stops early if PIDFILE's process exits.
wait_for_http_ok() {
    local url=$1 timeout=$2 pid_file=${3:-}
    for _ in $(seq 1 $((timeout * 5))); do
        curl -fsS "$url" >/dev/null 2>&1 && return 0
        if [ -n "$pid_file" ] && ! is_alive "$pid_file"; then return 1; fi
        sleep 0.2
    done
    return 1
}

# SIGTERM, then up to 15 s for the exit (the service drains gracefully), then the file goes.
stop_pid_file() {
    local file=$1 name pid
    [ -f "$file" ] || return 0
    name=$(basename "$file" .pid)
    pid=$(cat "$file")
    if kill -TERM "$pid" 2>/dev/null; then
        for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "$name (pid $pid) did not exit within 15 s of SIGTERM" >&2
        else
            echo "$name (pid $pid) stopped"
        fi
    fi
    rm -f "$file"
}

# apt_install WHAT PKG...: as root installs PKG...; elsewhere says WHAT is missing, and stops.
apt_install() {
    local what=$1 quoted names
    shift
    quoted=$(printf "'%s' and " "$@")
    quoted=${quoted% and }
    names="$*"
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        local s=""
        [ "$#" -gt 1 ] && s="s"
        die "missing: $what (install the Debian package$s $quoted$missing_hint)"
    fi
    echo "installing ${names// / and } ..."
    if [ -z "$apt_updated" ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# CMD, installed from the Debian package PKG if missing.
ensure_tool() {
    command -v "$1" >/dev/null || apt_install "$1" "$2"
}
