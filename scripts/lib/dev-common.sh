# shellcheck shell=bash
# Shared by scripts/dev-up and scripts/dev-down: paths, ports, PID files and
# process-group handling for the local service stack. Sourced, not run.
#
# A PID file `.dev/NAME.pid` holds "PID STARTTIME": STARTTIME is field 22 of
# /proc/PID/stat (clock ticks since boot), so a PID that the kernel has since
# given to another process never matches and is never signalled.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEV_DIR="${FIRSTCLICK_DEV_DIR:-$ROOT/.dev}"

PUBSUB_PORT="${FIRSTCLICK_PUBSUB_PORT:-8085}"
BQ_PORT="${FIRSTCLICK_BQ_PORT:-9050}"
BQ_GRPC_PORT="${FIRSTCLICK_BQ_GRPC_PORT:-9060}"
REDIS_PORT="${FIRSTCLICK_REDIS_PORT:-6380}"
# The first of the three cluster nodes' ports (the others are +1, +2; buses +10000).
REDIS_CLUSTER_PORT="${FIRSTCLICK_REDIS_CLUSTER_PORT:-7001}"
BQ_PROJECT="${PROJECT_ID:-test-project}"

# Services in start order; dev-down stops them in reverse.
ALL_SERVICES=(pubsub bigquery redis redis-cluster)

log() { printf '%s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# check_port NAME VALUE: die unless VALUE is a TCP port number.
check_port() {
	if ! [[ $2 =~ ^[0-9]+$ ]] || ((10#$2 < 1 || 10#$2 > 65535)); then
		die "$1 must be a TCP port (1-65535), found '$2'"
	fi
}

check_ports() {
	check_port FIRSTCLICK_PUBSUB_PORT "$PUBSUB_PORT"
	check_port FIRSTCLICK_BQ_PORT "$BQ_PORT"
	check_port FIRSTCLICK_BQ_GRPC_PORT "$BQ_GRPC_PORT"
	check_port FIRSTCLICK_REDIS_PORT "$REDIS_PORT"
	check_port FIRSTCLICK_REDIS_CLUSTER_PORT "$REDIS_CLUSTER_PORT"
	# Three nodes and their cluster buses (port + 10000) must all be ports.
	if ((10#$REDIS_CLUSTER_PORT + 2 + 10000 > 65535)); then
		die "FIRSTCLICK_REDIS_CLUSTER_PORT must be at most 55533 (the nodes use it, +1, +2 and each +10000), found '$REDIS_CLUSTER_PORT'"
	fi
}

# cluster_ports: the three cluster nodes' ports.
cluster_ports() {
	local base=$((10#$REDIS_CLUSTER_PORT))
	printf '%s %s %s\n' "$base" "$((base + 1))" "$((base + 2))"
}

# select_services ARG...: set SERVICES to the named services (all when none),
# dying on an unknown name.
select_services() {
	SERVICES=()
	if (($# == 0)); then
		SERVICES=("${ALL_SERVICES[@]}")
		return
	fi
	local arg known s
	for arg in "$@"; do
		known=0
		for s in "${ALL_SERVICES[@]}"; do [[ $arg == "$s" ]] && known=1; done
		((known)) || die "unknown service '$arg': expected one of ${ALL_SERVICES[*]}"
		SERVICES+=("$arg")
	done
}

# Take .dev/lock so that two dev-up/dev-down runs in one work tree never
# interleave. Held until the script exits (fd 9 stays open).
take_lock() {
	mkdir -p "$DEV_DIR"
	exec 9>"$DEV_DIR/lock"
	if ! flock -w 600 9; then
		die "another dev-up/dev-down holds $DEV_DIR/lock for over 600 s"
	fi
}

pid_file() { printf '%s/%s.pid' "$DEV_DIR" "$1"; }
log_file() { printf '%s/%s.log' "$DEV_DIR" "$1"; }

# proc_field PID INDEX: print a field of /proc/PID/stat after the command
# name (INDEX 0 is field 3, the state). Fails when PID is gone or a zombie.
proc_field() {
	local stat fields
	stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	# The command name (field 2) may hold spaces and ')': cut through the last ')'.
	read -r -a fields <<<"${stat##*) }"
	[[ ${fields[0]} != Z && ${fields[0]} != X ]] || return 1
	printf '%s\n' "${fields[$2]}"
}

proc_start_time() { proc_field "$1" 19; }
proc_pgid() { proc_field "$1" 2; }

# owned_pid NAME: print the PID recorded for NAME if that very process is
# still alive (same start time); fail otherwise (no file, stale, reused PID).
owned_pid() {
	local file pid start now
	file="$(pid_file "$1")"
	[[ -f $file ]] || return 1
	read -r pid start <"$file" || return 1
	[[ $pid =~ ^[0-9]+$ && -n $start ]] || return 1
	now="$(proc_start_time "$pid")" || return 1
	[[ $now == "$start" ]] || return 1
	printf '%s\n' "$pid"
}

# stop_pid NAME PID: SIGTERM the process group that PID leads (every service
# is started with setsid, so it leads its own group and its children, e.g.
# the JVM of the Pub/Sub emulator, are in it), wait for the whole group to
# exit, SIGKILL it after FIRSTCLICK_STOP_TIMEOUT seconds (default 20).
stop_pid() {
	local name="$1" pid="$2" target timeout deadline
	timeout="${FIRSTCLICK_STOP_TIMEOUT:-20}"
	if [[ "$(proc_pgid "$pid" || true)" == "$pid" ]]; then
		target="-$pid" # the group
	else
		target="$pid" # not a group leader: signal only the process itself
	fi
	kill -TERM -- "$target" 2>/dev/null || true
	deadline=$((SECONDS + timeout))
	while kill -0 -- "$target" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			log "$name: still running ${timeout}s after SIGTERM; sending SIGKILL"
			kill -KILL -- "$target" 2>/dev/null || true
			deadline=$((SECONDS + 5))
			while kill -0 -- "$target" 2>/dev/null; do
				if ((SECONDS >= deadline)); then
					log "$name: process (group) $target survives SIGKILL"
					return 1
				fi
				sleep 0.2
			done
			return 0
		fi
		sleep 0.2
	done
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
	timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Readiness probes: succeed only when the service itself answers.
pubsub_ready() {
	local body
	body="$(curl -s -m 2 "http://127.0.0.1:$PUBSUB_PORT/" 2>/dev/null)" || return 1
	[[ $body == Ok* ]]
}
# REST comes up before the gRPC server binds, so wait for both.
bigquery_ready() {
	curl -sf -m 2 -o /dev/null "http://127.0.0.1:$BQ_PORT/readyz" 2>/dev/null &&
		port_open "$BQ_GRPC_PORT"
}
redis_ready() {
	[[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}
# Every node serves the whole slot space with the others (a cluster of three masters).
redis_cluster_ready() {
	local port info
	for port in $(cluster_ports); do
		info="$(redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null)" || return 1
		[[ $info == *cluster_state:ok* && $info == *cluster_known_nodes:3* ]] || return 1
	done
}

# service_port NAME: the port(s) a service listens on, for messages.
service_port() {
	case "$1" in
	pubsub) printf '%s' "$PUBSUB_PORT" ;;
	bigquery) printf '%s (REST), %s (gRPC)' "$BQ_PORT" "$BQ_GRPC_PORT" ;;
	redis) printf '%s' "$REDIS_PORT" ;;
	redis-cluster) cluster_ports | sed 's/ /, /g' | tr -d '\n' ;;
	esac
}

# The file that tests and local runs `source`.
env_contents() {
	cat <<EOF
# Written by scripts/dev-up: the local service stack. Use: source .dev/env
export PUBSUB_EMULATOR_HOST=127.0.0.1:$PUBSUB_PORT
export BIGQUERY_EMULATOR_HOST=127.0.0.1:$BQ_PORT
export BIGQUERY_EMULATOR_GRPC_HOST=127.0.0.1:$BQ_GRPC_PORT
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export REDIS_CLUSTER_URL=$(cluster_ports | sed 's|^|redis://127.0.0.1:|; s| |,redis://127.0.0.1:|g')
export PROJECT_ID=$(printf '%q' "$BQ_PROJECT")
EOF
}
