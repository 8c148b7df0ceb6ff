#!/usr/bin/env bash
# Rolls a hopper release out to every segment host of a Greenplum cluster,
# as gpscp and gpssh do: copies the release, the ticket key (and the trainer
# key) to each host with scp, then runs install-host.sh there with sudo,
# which enables a flight-server per host on README's port convention — the
# same --port on every segment host, every server started with
# --segment-flight-port PORT, so whichever server a client plans at locates
# each segment's endpoint on its own host — and N trainers per host.
#
#   rollout.sh --release hopper-0.1.0-linux-x86_64.tar.gz \
#       --greenplum postgresql://mdw:5432/warehouse HOSTFILE
#
#   HOSTFILE               segment hosts, one a line (gpssh -f's format; # comments)
#   --release TARBALL      what scripts/package.sh made
#   --greenplum URL        the coordinator: host, port, database; no user, no password
#   --ticket-key FILE      the key all flight-servers share (default ./ticket.key,
#                          made here with bin/flight-server keygen if missing)
#   --port PORT            every host's flight-server (default 50051)
#   --trainers N           trainers per host, at --trainer-port and up (default 0)
#   --trainer-port PORT    (default 7000)
#   --trainer-key FILE     the key runners prove (default ./trainer.key, made if missing)
#   --threads T            intra-op threads per trainer (default: the host's cores / N)
#   --flight-args "…"      more flight-server flags (TLS, --metrics, --max-connections)
#   --trainer-args "…"     more trainer flags (TLS)
#   --ssh-user USER        log in as USER (default: as ssh decides)
#   --ssh-opt OPT          an ssh/scp option, repeatable (e.g. -oPort=2222)
#   --parallel N           hosts at once (default 8)
#   --sudo CMD             how the install gets root on the hosts (default sudo;
#                          --sudo "" where ssh logs in as root)
#   --root DIR             lay files out under DIR on the hosts (%h: the host's
#                          name), start nothing: a staging tree, or a test
#   --no-start             install, do not (re)start the services
#   --dry-run              print each host's commands; copy and change nothing
#
# Needs: ssh to every host without a password prompt (as gpssh), and sudo
# there without one (or --sudo "" and ssh as root). Each host's output goes to rollout-logs/HOST.log; the
# exit status is non-zero if any host failed, naming it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() { echo "rollout: $*" >&2; exit 1; }

RELEASE="" GREENPLUM="" TICKET_KEY="./ticket.key" TRAINER_KEY="./trainer.key"
PORT=50051 TRAINERS=0 TRAINER_PORT=7000 THREADS="" FLIGHT_ARGS="" TRAINER_ARGS=""
SSH_USER="" SSH_OPTS=() PARALLEL=8 ROOT="" NO_START=0 DRY=0 HOSTFILE="" SUDO=sudo
while (($#)); do
    case "$1" in
        --release) RELEASE="$2"; shift 2 ;;
        --greenplum) GREENPLUM="$2"; shift 2 ;;
        --ticket-key) TICKET_KEY="$2"; shift 2 ;;
        --trainer-key) TRAINER_KEY="$2"; shift 2 ;;
        --port) PORT="$2"; shift 2 ;;
        --trainers) TRAINERS="$2"; shift 2 ;;
        --trainer-port) TRAINER_PORT="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --flight-args) FLIGHT_ARGS="$2"; shift 2 ;;
        --trainer-args) TRAINER_ARGS="$2"; shift 2 ;;
        --ssh-user) SSH_USER="$2"; shift 2 ;;
        --ssh-opt) SSH_OPTS+=("$2"); shift 2 ;;
        --parallel) PARALLEL="$2"; shift 2 ;;
        --root) ROOT="$2"; shift 2 ;;
        --sudo) SUDO="$2"; shift 2 ;;
        --no-start) NO_START=1; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) [[ -z "$HOSTFILE" ]] || die "one HOSTFILE only, got '$HOSTFILE' and '$1'"; HOSTFILE="$1"; shift ;;
    esac
done

[[ -n "$HOSTFILE" ]] || die "give a HOSTFILE: the segment hosts, one a line (see --help)"
[[ -f "$HOSTFILE" ]] || die "HOSTFILE $HOSTFILE does not exist"
[[ -f "$RELEASE" ]] || die "--release TARBALL: the release scripts/package.sh makes (missing: '$RELEASE')"
[[ -n "$GREENPLUM" ]] || die "--greenplum URL: the coordinator, e.g. postgresql://mdw:5432/warehouse"
[[ "$GREENPLUM" != *@* ]] || die "--greenplum: no user or password in the URL (callers log in as themselves; see docs/deploy.md)"
[[ "$PARALLEL" =~ ^[1-9][0-9]*$ ]] || die "--parallel takes a positive number"
mapfile -t HOSTS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$HOSTFILE" | grep -v '^$' | awk '!seen[$0]++')
((${#HOSTS[@]})) || die "HOSTFILE $HOSTFILE names no host"

[[ "$(basename "$TICKET_KEY")" != "$(basename "$TRAINER_KEY")" ]] \
    || die "--ticket-key and --trainer-key need different file names (both are copied to one directory)"
# Each host's private directory for the copies: a fresh name mkdir makes
# (never one that exists), removed when the install ends.
REMOTE_DIR="/tmp/hopper-rollout-$$-$RANDOM$RANDOM"

# Keys: made once, here, if missing; never printed.
make_key() { # FILE WHAT
    [[ -f "$1" ]] && return
    host_cleanup() { # HOST
    printf '%q ' ssh -oBatchMode=yes "${SSH_OPTS[@]}" "$(target "$1")" "rm -rf $REMOTE_DIR-$1"; echo
}

if ((DRY)); then
        echo "# would make $2 in $1 (32 random bytes, mode 0600)"
        return
    fi
    (umask 077 && head -c 32 /dev/urandom > "$1")
    echo "rollout: made $2 in $1 (keep it; every host gets a copy)" >&2
}
make_key "$TICKET_KEY" "the ticket key"
((TRAINERS == 0)) || make_key "$TRAINER_KEY" "the trainer key"

q() { printf '%q' "$1"; }
target() { if [[ -n "$SSH_USER" ]]; then echo "$SSH_USER@$1"; else echo "$1"; fi; }

# The commands for one host, one a line: run by `run_host`, or printed.
host_commands() { # HOST
    local host="$1" t dir
    t="$(target "$host")"
    dir="$REMOTE_DIR-$host"
    local files=("$RELEASE" "$HERE/install-host.sh" "$TICKET_KEY")
    ((TRAINERS == 0)) || files+=("$TRAINER_KEY")
    local ssh=(ssh -oBatchMode=yes "${SSH_OPTS[@]}") scp=(scp -q -oBatchMode=yes "${SSH_OPTS[@]}")
    local install=()
    [[ -z "$SUDO" ]] || install+=("$SUDO")
    install+=(bash "$dir/install-host.sh" --release "$dir/$(basename "$RELEASE")"
        --host "$host" --greenplum "$GREENPLUM" --ticket-key "$dir/$(basename "$TICKET_KEY")"
        --port "$PORT" --trainers "$TRAINERS" --trainer-port "$TRAINER_PORT")
    ((TRAINERS == 0)) || install+=(--trainer-key "$dir/$(basename "$TRAINER_KEY")")
    [[ -z "$THREADS" ]] || install+=(--threads "$THREADS")
    [[ -z "$FLIGHT_ARGS" ]] || install+=(--flight-args "$FLIGHT_ARGS")
    [[ -z "$TRAINER_ARGS" ]] || install+=(--trainer-args "$TRAINER_ARGS")
    [[ -z "$ROOT" ]] || install+=(--root "${ROOT//%h/$host}" --no-start)
    ((NO_START == 0)) || install+=(--no-start)
    local remote_install="" a
    for a in "${install[@]}"; do remote_install+="$(q "$a") "; done
    # 1. a private directory; 2. the files (gpscp); 3. the install (gpssh);
    # 4. the copies of the keys go, whatever happened.
    printf '%q ' "${ssh[@]}" "$t" "mkdir -m 0700 $dir"; echo
    printf '%q ' "${scp[@]}" "${files[@]}" "$t:$dir/"; echo
    printf '%q ' "${ssh[@]}" "$t" "$remote_install; rc=\$?; rm -rf $dir; exit \$rc"; echo
}

if ((DRY)); then
    for host in "${HOSTS[@]}"; do
        echo "# $host"
        host_commands "$host"
    done
    exit 0
fi

LOGS="rollout-logs"
mkdir -p "$LOGS"
run_host() { # HOST: its commands in order, the first failure stops them
    local host="$1" line rc=0
    {
        while IFS= read -r line; do
            echo "+ $line"
            eval "$line" </dev/null || { rc=$?; break; }
        done < <(host_commands "$host")
        if ((rc != 0)); then
            # No copy of a key stays behind on a host that failed.
            eval "$(host_cleanup "$host")" </dev/null || true
        fi
    } >"$LOGS/$host.log" 2>&1
    echo "$rc" >"$LOGS/$host.status"
}

echo "rollout: ${#HOSTS[@]} hosts, $PARALLEL at a time; logs in $LOGS/" >&2
running=0
for host in "${HOSTS[@]}"; do
    if ((running >= PARALLEL)); then
        wait -n || true
        running=$((running - 1))
    fi
    rm -f "$LOGS/$host.status"
    run_host "$host" &
    running=$((running + 1))
done
wait

failed=()
for host in "${HOSTS[@]}"; do
    if [[ "$(cat "$LOGS/$host.status" 2>/dev/null)" == 0 ]]; then
        echo "rollout: $(grep '^install-host: ' "$LOGS/$host.log" | tail -1 | sed 's/^install-host: //')"
    else
        failed+=("$host")
        echo "rollout: $host FAILED: $(grep -v '^+ ' "$LOGS/$host.log" | tail -1)" >&2
    fi
done
((${#failed[@]} == 0)) || die "${#failed[@]} of ${#HOSTS[@]} hosts failed (${failed[*]}); see $LOGS/HOST.log, fix, and run again (it is idempotent)"
echo "rollout: every host done; their health: docs/deploy.md, \"Health\"" >&2
