#!/usr/bin/env bash
# Installs a hopper release on THIS host and enables its services: what
# rollout.sh runs on every segment host (as root, through ssh). It can be
# run by hand on one host too.
#
#   install-host.sh --release hopper-VERSION-linux-x86_64.tar.gz --host NAME \
#       --greenplum postgresql://mdw:5432/warehouse --ticket-key FILE \
#       [--port 50051] [--trainers N --trainer-key FILE [--trainer-port 7000] [--threads T]] \
#       [--flight-args "…"] [--trainer-args "…"] [--root DIR] [--no-start]
#
# Lays out (under --root, default /):
#   /opt/hopper/hopper-VERSION-…/        the release; /opt/hopper/current → it
#   /etc/hopper/ticket.key, trainer.key  root:hopper 0640
#   /etc/hopper/PORT.env                 one per flight-server@PORT and mop-trainer@PORT
#   /etc/systemd/system/{flight-server,mop-trainer}@.service
# then `systemctl enable --now flight-server@PORT mop-trainer@7000 …`.
# The previous release stays in /opt/hopper until removed by hand, so
# going back is `ln -sfn OLD /opt/hopper/current` and a restart.
set -euo pipefail

die() { echo "install-host: $*" >&2; exit 1; }

RELEASE="" HOST="" GREENPLUM="" TICKET_KEY="" TRAINER_KEY=""
PORT=50051 TRAINERS=0 TRAINER_PORT=7000 THREADS="" FLIGHT_ARGS="" TRAINER_ARGS=""
ROOT="" START=1
while (($#)); do
    case "$1" in
        --release) RELEASE="$2"; shift 2 ;;
        --host) HOST="$2"; shift 2 ;;
        --greenplum) GREENPLUM="$2"; shift 2 ;;
        --ticket-key) TICKET_KEY="$2"; shift 2 ;;
        --trainer-key) TRAINER_KEY="$2"; shift 2 ;;
        --port) PORT="$2"; shift 2 ;;
        --trainers) TRAINERS="$2"; shift 2 ;;
        --trainer-port) TRAINER_PORT="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --flight-args) FLIGHT_ARGS="$2"; shift 2 ;;
        --trainer-args) TRAINER_ARGS="$2"; shift 2 ;;
        --root) ROOT="${2%/}"; shift 2 ;;
        --no-start) START=0; shift ;;
        *) die "unknown argument '$1'" ;;
    esac
done
[[ -f "$RELEASE" ]] || die "--release FILE: the release tarball (scripts/package.sh makes it)"
[[ -n "$HOST" ]] || die "--host NAME: this host's name as clients dial it"
[[ -n "$GREENPLUM" ]] || die "--greenplum URL: the coordinator (host, port, database; no user or password)"
[[ -f "$TICKET_KEY" ]] || die "--ticket-key FILE: the key every flight-server shares"
[[ "$GREENPLUM" != *@* ]] || die "--greenplum: give no user or password in the URL (callers log in as themselves)"
[[ "$PORT" =~ ^[0-9]+$ && "$TRAINERS" =~ ^[0-9]+$ && "$TRAINER_PORT" =~ ^[0-9]+$ ]] \
    || die "--port, --trainers and --trainer-port take numbers"
if ((TRAINERS > 0)); then
    [[ -f "$TRAINER_KEY" ]] || die "--trainer-key FILE: the key runners prove to the trainers"
    if [[ -z "$THREADS" ]]; then
        THREADS=$(($(nproc) / TRAINERS))
        ((THREADS > 0)) || THREADS=1
    fi
fi
if [[ -z "$ROOT" && $(id -u) -ne 0 ]]; then
    die "run as root (rollout.sh uses sudo), or give --root DIR to lay the files out elsewhere"
fi

# The service user, made only on a real install (not under --root).
OWNER=root
if [[ -z "$ROOT" ]]; then
    getent group hopper >/dev/null || groupadd --system hopper
    getent passwd hopper >/dev/null \
        || useradd --system --gid hopper --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin hopper
    OWNER=hopper
fi
own=()
[[ $(id -u) -eq 0 ]] && own=(-o root -g "$OWNER")

# The release, unpacked beside earlier ones; `current` switches at once.
NAME="$(tar -tzf "$RELEASE" | awk -F/ 'NR == 1 { print $1 }')"
[[ "$NAME" == hopper-* ]] || die "$RELEASE is not a hopper release (its top directory is '$NAME')"
install -d -m 0755 "$ROOT/opt/hopper"
tar -xzf "$RELEASE" -C "$ROOT/opt/hopper" --no-same-owner
ln -sfn "$NAME" "$ROOT/opt/hopper/current.new"
mv -T "$ROOT/opt/hopper/current.new" "$ROOT/opt/hopper/current"

# Keys and environment files: readable by root and the service's group only.
install -d -m 0750 "${own[@]}" "$ROOT/etc/hopper"
install -m 0640 "${own[@]}" "$TICKET_KEY" "$ROOT/etc/hopper/ticket.key"
((TRAINERS == 0)) || install -m 0640 "${own[@]}" "$TRAINER_KEY" "$ROOT/etc/hopper/trainer.key"

scheme=grpc+tcp
[[ " $FLIGHT_ARGS " == *" --tls-cert "* ]] && scheme=grpc+tls
env_file() { # PATH CONTENT
    install -m 0640 "${own[@]}" /dev/null "$1"
    printf '%s\n' "$2" > "$1"
}
env_file "$ROOT/etc/hopper/$PORT.env" "# flight-server@$PORT on $HOST (written by install-host.sh)
HOPPER_BIND_HOST=0.0.0.0
HOPPER_TICKET_KEY_FILE=/etc/hopper/ticket.key
HOPPER_FLIGHT_ARGS=--greenplum $GREENPLUM --advertise $scheme://$HOST:$PORT --segment-flight-port $PORT --auth database${FLIGHT_ARGS:+ $FLIGHT_ARGS}"
units=("flight-server@$PORT.service")
for ((i = 0; i < TRAINERS; i++)); do
    p=$((TRAINER_PORT + i))
    env_file "$ROOT/etc/hopper/$p.env" "# mop-trainer@$p on $HOST (written by install-host.sh)
HOPPER_BIND_HOST=0.0.0.0
HOPPER_TRAINER_KEY_FILE=/etc/hopper/trainer.key
HOPPER_TRAINER_THREADS=$THREADS
HOPPER_TRAINER_ARGS=$TRAINER_ARGS"
    units+=("mop-trainer@$p.service")
done

install -d -m 0755 "$ROOT/etc/systemd/system"
install -m 0644 "$ROOT/opt/hopper/current/systemd/flight-server@.service" \
    "$ROOT/opt/hopper/current/systemd/mop-trainer@.service" "$ROOT/etc/systemd/system/"

if ((START)) && [[ -z "$ROOT" ]]; then
    systemctl daemon-reload
    systemctl enable "${units[@]}"
    # restart, not start: a new release replaces the running one.
    systemctl restart "${units[@]}"
    for u in "${units[@]}"; do
        systemctl is-active --quiet "$u" || die "$u did not start: journalctl -u $u"
    done
fi
echo "install-host: $HOST: $NAME, ${units[*]}$( ((START)) && [[ -z "$ROOT" ]] && echo " running" || echo " installed, not started")"
