#!/usr/bin/env bash
# bench/proxy.sh: the meshwork sidecar against HAProxy and nginx as HTTP/1.1 reverse proxies, on
# this machine, on 127.0.0.1 only. See bench/README.md for the method and how to read the table.
#
#   bash bench/proxy.sh                       # everything: install, build the sidecar, measure
#   TARGETS="direct haproxy" bash bench/proxy.sh
#   SIDECAR_BIN=/path/to/sidecar bash bench/proxy.sh
#
# What it does, in order:
#   1. installs what is missing (Debian: haproxy, nginx-light, wrk, curl, jq, iproute2, procps;
#      oha through `cargo install oha --locked`);
#   2. builds the sidecar (`cargo build --release --example sidecar`) unless SIDECAR_BIN names one;
#   3. starts two nginx backends (one worker each) answering `hello from A|B` on 127.0.0.1;
#   4. for each target in turn (direct = one backend with no proxy, the physical limit; HAProxy;
#      nginx; the sidecar): starts it pinned to its own core with one worker thread, checks that it
#      answers 200 from both backends, warms up, then runs
#        - a max-throughput run: wrk, CONNECTIONS connections, DURATION seconds (req/s, p50, p99),
#        - a fixed-rate run: oha at RATE req/s with latency correction, same connections and
#          duration (p50, p99, and the proxy's CPU time per request from /proc/PID/stat),
#      reads the proxy's peak RSS (VmHWM) and stops it;
#   5. prints a markdown table (each figure with its ratio to HAProxy's) and saves it, with the raw
#      outputs, configurations and logs, under bench/out/ (git-ignored).
# Every process it starts runs in its own process group and is stopped on exit, error or signal.
#
# Settings (environment):
#   TARGETS       targets in order (default "direct haproxy nginx sidecar")
#   CONNECTIONS   connections of both runs (default 64)
#   DURATION      seconds of each measured run (default 10, at most 60)
#   WARMUP        seconds of the discarded warm-up run (default 2)
#   RATE          requests/s of the fixed-rate run (default 10000)
#   PORT_BASE     first of the 127.0.0.1 ports used: PORT_BASE+1..+2 backends, +10..+12 proxies
#                 (default 18400)
#   LOAD_CPU      core of the load generators (default 0)
#   PROXY_CPU     core of the proxy under test (default 1)
#   BACKEND_CPU   core(s) of the two backends (default 0, shared with the load generator)
#   SIDECAR_BIN   a sidecar binary to use instead of building the repository's own
#   OUT           output folder (default bench/out)
#   SKIP_INSTALL  set to 1 to only check for the tools instead of installing them
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEMPLATES="$ROOT/bench/proxy"

TARGETS=${TARGETS:-"direct haproxy nginx sidecar"}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
RATE=${RATE:-10000}
PORT_BASE=${PORT_BASE:-18400}
LOAD_CPU=${LOAD_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
BACKEND_CPU=${BACKEND_CPU:-0}
SIDECAR_BIN=${SIDECAR_BIN:-}
OUT=${OUT:-"$ROOT/bench/out"}
SKIP_INSTALL=${SKIP_INSTALL:-0}

export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"

log() { printf '[proxy.sh] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# ---------------------------------------------------------------------------------------------------
# Settings check: every value is validated before anything is installed or started.

# in_range NAME VALUE MIN MAX: VALUE must be a whole number from MIN to MAX.
in_range() {
  if ! [[ $2 =~ ^[0-9]+$ ]] || [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then
    die "$1 must be a whole number from $3 to $4 (got '$2')"
  fi
}

check_settings() {
  in_range CONNECTIONS "$CONNECTIONS" 1 1000
  in_range DURATION "$DURATION" 1 60
  in_range WARMUP "$WARMUP" 1 30
  in_range RATE "$RATE" 1 200000
  in_range PORT_BASE "$PORT_BASE" 1024 65000
  local t
  for t in $TARGETS; do
    case $t in
    direct | haproxy | nginx | sidecar) ;;
    *) die "TARGETS: unknown target '$t' (known: direct haproxy nginx sidecar)" ;;
    esac
  done
  [ -n "${TARGETS// /}" ] || die "TARGETS is empty"
}

# ---------------------------------------------------------------------------------------------------
# Tools: installs only what is missing; assumes nothing is preinstalled but apt-get and cargo.

have() { command -v "$1" >/dev/null 2>&1; }

install_deps() {
  local need=()
  have haproxy || need+=(haproxy)
  have nginx || need+=(nginx-light)
  have wrk || need+=(wrk)
  have curl || need+=(curl)
  have jq || need+=(jq)
  have ss || need+=(iproute2)
  have ps || need+=(procps)
  have taskset || need+=(util-linux)
  if [ ${#need[@]} -gt 0 ]; then
    [ "$SKIP_INSTALL" = 1 ] && die "missing packages: ${need[*]} (SKIP_INSTALL=1)"
    have apt-get || die "missing packages: ${need[*]}, and no apt-get to install them"
    log "installing: ${need[*]}"
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  if ! have oha; then
    [ "$SKIP_INSTALL" = 1 ] && die "oha is missing (SKIP_INSTALL=1)"
    have cargo || die "oha is missing and cargo is not there to install it"
    log "installing oha with cargo (a few minutes, once)"
    cargo install oha --locked --quiet
  fi
  local tool
  for tool in haproxy nginx wrk curl jq ss taskset setsid oha; do
    have "$tool" || die "$tool is still missing after the install step"
  done
}

# ---------------------------------------------------------------------------------------------------
# The sidecar: the repository's own release build unless SIDECAR_BIN names a binary.

build_sidecar() {
  if [ -n "$SIDECAR_BIN" ]; then
    [ -x "$SIDECAR_BIN" ] || die "SIDECAR_BIN=$SIDECAR_BIN is not an executable file"
    log "sidecar: using SIDECAR_BIN=$SIDECAR_BIN"
    return
  fi
  have cargo || die "cargo is needed to build the sidecar (or set SIDECAR_BIN)"
  log "sidecar: cargo build --release --example sidecar"
  cargo build --release --example sidecar --manifest-path "$ROOT/Cargo.toml" ||
    die "the sidecar did not build (set SIDECAR_BIN, or leave sidecar out of TARGETS)"
  local target_dir
  target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
    jq -r .target_directory)
  SIDECAR_BIN="$target_dir/release/examples/sidecar"
  [ -x "$SIDECAR_BIN" ] || die "the build did not produce $SIDECAR_BIN"
}

# ---------------------------------------------------------------------------------------------------
# Processes. Each one starts in its own session (so its process group id is its pid), pinned with
# taskset, and is remembered in GROUPS_RUNNING until it is stopped. cleanup stops all of them.

GROUPS_RUNNING=()
PINNING=1

# start_group LOG CPULIST CMD...: starts CMD in the background, pinned to CPULIST, in a session of
# its own; sets STARTED to its process group id.
start_group() {
  local logfile=$1 cpus=$2
  shift 2
  local pinned=()
  [ "$PINNING" = 1 ] && pinned=(taskset -c "$cpus")
  # In a non-interactive shell a background job is not a process group leader, so setsid does not
  # fork: $! is CMD itself (setsid and taskset exec it), and it leads its own new group.
  setsid "${pinned[@]}" "$@" >"$logfile" 2>&1 </dev/null &
  STARTED=$!
  GROUPS_RUNNING+=("$STARTED")
  # On a loaded machine the child may not have run setsid yet: wait (2 s at most) until it leads
  # its group, so that signals to the group reach it.
  local i
  for i in $(seq 1 200); do
    [ "$(pgrp_of "$STARTED")" = "$STARTED" ] && return 0
    kill -0 "$STARTED" 2>/dev/null || return 0
    sleep 0.01
  done
  log "warning: process $STARTED did not start its own process group"
}

# pgrp_of PID: the process group of PID (empty when it is gone).
pgrp_of() {
  local line
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 0
  line=${line##*) }
  local -a fields
  read -ra fields <<<"$line"
  echo "${fields[2]}"
}

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

stop_group() {
  local pg=$1 i
  if group_alive "$pg"; then
    kill -TERM -- "-$pg" 2>/dev/null || true
    for i in $(seq 1 50); do
      group_alive "$pg" || break
      sleep 0.1
    done
    if group_alive "$pg"; then
      log "process group $pg did not stop on SIGTERM within 5 s: SIGKILL"
      kill -KILL -- "-$pg" 2>/dev/null || true
    fi
  fi
  wait "$pg" 2>/dev/null || true
  local kept=() g
  for g in "${GROUPS_RUNNING[@]}"; do
    [ "$g" = "$pg" ] || kept+=("$g")
  done
  GROUPS_RUNNING=("${kept[@]}")
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  local g
  for g in "${GROUPS_RUNNING[@]}"; do
    stop_group "$g"
  done
  exit "$status"
}

port_free() { [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

# wait_port PORT GROUP LOG: waits until 127.0.0.1:PORT answers HTTP (10 s at most).
wait_port() {
  local port=$1 pg=$2 logfile=$3 deadline=$((SECONDS + 10))
  while [ "$SECONDS" -lt "$deadline" ]; do
    # Any HTTP answer will do: every target speaks HTTP.
    if curl -s -o /dev/null -m 1 "http://127.0.0.1:$port/"; then
      return 0
    fi
    if ! group_alive "$pg"; then
      log "the process exited before listening on $port; its log ($logfile):"
      cat "$logfile" >&2 || true
      return 1
    fi
    sleep 0.05
  done
  log "nothing answers on 127.0.0.1:$port after 10 s; its log ($logfile):"
  cat "$logfile" >&2 || true
  return 1
}

# run_load LOG CMD...: runs a load generator on LOAD_CPU, in the background so that a signal reaches
# the trap at once, with a hard bound of the run's length plus 30 s.
run_load() {
  local logfile=$1
  shift
  start_group "$logfile" "$LOAD_CPU" timeout -k 5 "$((DURATION + WARMUP + 30))" "$@"
  local pg=$STARTED status=0
  wait "$pg" || status=$?
  stop_group "$pg"
  return "$status"
}

# ---------------------------------------------------------------------------------------------------
# /proc readings of a process group.

CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks GROUP: "USER SYSTEM" CPU time (clock ticks) of every live process in the group.
cpu_ticks() {
  local pg=$1 user=0 system=0 f line rest
  local -a fields
  for f in /proc/[0-9]*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue
    rest=${line##*) }
    read -ra fields <<<"$rest"
    # After "pid (comm) ": 0 state, 1 ppid, 2 pgrp, ..., 11 utime, 12 stime.
    if [ "${fields[2]}" = "$pg" ]; then
      user=$((user + fields[11]))
      system=$((system + fields[12]))
    fi
  done
  echo "$user $system"
}

# peak_rss_kb GROUP: the largest VmHWM in the group, the process that serves the traffic (for
# nginx the worker; its idle master is smaller).
peak_rss_kb() {
  local pg=$1 best=0 f dir kb
  for f in /proc/[0-9]*/stat; do
    dir=${f%/stat}
    local line rest
    local -a fields
    { read -r line <"$f"; } 2>/dev/null || continue
    rest=${line##*) }
    read -ra fields <<<"$rest"
    [ "${fields[2]}" = "$pg" ] || continue
    kb=$(awk '/^VmHWM:/ { print $2 }' "$dir/status" 2>/dev/null || true)
    [ -n "$kb" ] && [ "$kb" -gt "$best" ] && best=$kb
  done
  echo "$best"
}

# ---------------------------------------------------------------------------------------------------
# Configurations from the templates in bench/proxy/.

user_directive() {
  # nginx started as root switches its workers to `nobody`, whose group does not exist on Debian.
  if [ "$(id -u)" -eq 0 ]; then
    echo "user root root;"
  else
    echo "# (not root: workers keep the current user)"
  fi
}

render() {
  # render TEMPLATE DEST KEY=VALUE...
  local template=$1 dest=$2
  shift 2
  local text kv
  text=$(<"$template")
  for kv in "$@"; do
    text=${text//"@${kv%%=*}@"/"${kv#*=}"}
  done
  printf '%s\n' "$text" >"$dest"
}

# ---------------------------------------------------------------------------------------------------
# One target.

declare -A RPS P50 P99 FIX_RPS FIX_P50 FIX_P99 CPU_US CPU_SPLIT RSS_KB ERRORS SEEN

# sanity PORT NAME: 16 requests must all be 200 with a backend's body; records which backends answered.
sanity() {
  local port=$1 name=$2 i out code bodies=""
  for i in $(seq 1 16); do
    out=$(curl -s -m 5 -w ' %{http_code}' "http://127.0.0.1:$port/sanity/$i") || {
      log "$name: request $i failed"
      return 1
    }
    code=${out##* }
    [ "$code" = 200 ] || {
      log "$name: request $i answered $code: $out"
      return 1
    }
    case $out in
    *"hello from A"*) bodies="${bodies}A" ;;
    *"hello from B"*) bodies="${bodies}B" ;;
    *)
      log "$name: unexpected body: $out"
      return 1
      ;;
    esac
  done
  local seen=""
  [[ $bodies == *A* ]] && seen="A"
  [[ $bodies == *B* ]] && seen="${seen:+$seen+}B"
  SEEN[$name]=$seen
}

run_target() {
  local name=$1 dir="$RUN_DIR/$1" port pg="" logfile
  mkdir -p "$dir"
  logfile="$dir/server.log"
  case $name in
  direct)
    port=$BACKEND_A_PORT
    ;;
  haproxy)
    port=$((PORT_BASE + 10))
    render "$TEMPLATES/haproxy.cfg.in" "$dir/haproxy.cfg" "PORT=$port" \
      "BACKEND_A=127.0.0.1:$BACKEND_A_PORT" "BACKEND_B=127.0.0.1:$BACKEND_B_PORT"
    port_free "$port" || die "127.0.0.1:$port is taken (set PORT_BASE)"
    start_group "$logfile" "$PROXY_CPU" haproxy -f "$dir/haproxy.cfg" -db
    pg=$STARTED
    ;;
  nginx)
    port=$((PORT_BASE + 11))
    render "$TEMPLATES/nginx-proxy.conf.in" "$dir/nginx.conf" "PORT=$port" "DIR=$dir" \
      "USER=$(user_directive)" "BACKEND_A=127.0.0.1:$BACKEND_A_PORT" \
      "BACKEND_B=127.0.0.1:$BACKEND_B_PORT"
    port_free "$port" || die "127.0.0.1:$port is taken (set PORT_BASE)"
    start_group "$logfile" "$PROXY_CPU" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
      -g 'daemon off;'
    pg=$STARTED
    ;;
  sidecar)
    port=$((PORT_BASE + 12))
    port_free "$port" || die "127.0.0.1:$port is taken (set PORT_BASE)"
    # One tokio worker thread (the sidecar uses the multi-thread runtime, which honours
    # TOKIO_WORKER_THREADS), warnings only, no access log (off by default), admin on a free port.
    start_group "$logfile" "$PROXY_CPU" env TOKIO_WORKER_THREADS=1 RUST_LOG=warn "$SIDECAR_BIN" \
      --listen "127.0.0.1:$port" \
      --upstream "127.0.0.1:$BACKEND_A_PORT,127.0.0.1:$BACKEND_B_PORT" --admin 127.0.0.1:0
    pg=$STARTED
    ;;
  esac
  if [ -n "$pg" ]; then
    wait_port "$port" "$pg" "$logfile" || die "$name did not start"
  fi
  sanity "$port" "$name" || die "$name does not answer correctly through 127.0.0.1:$port"
  log "$name: answering on 127.0.0.1:$port (backends seen: ${SEEN[$name]}); warm-up ${WARMUP} s"

  local url="http://127.0.0.1:$port/"
  run_load "$dir/warmup.txt" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "$url" ||
    die "$name: warm-up run failed (see $dir/warmup.txt)"

  log "$name: max throughput: wrk, $CONNECTIONS connections, ${DURATION} s"
  run_load "$dir/wrk.txt" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    -s "$TEMPLATES/wrk-report.lua" "$url" || die "$name: wrk failed (see $dir/wrk.txt)"
  local line
  line=$(grep '^WRK ' "$dir/wrk.txt") || die "$name: no report line in $dir/wrk.txt"
  local requests duration_us p50 p99 errors
  requests=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line")
  duration_us=$(sed -E 's/.*duration_us=([0-9]+).*/\1/' <<<"$line")
  p50=$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$line")
  p99=$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line")
  errors=$(awk '{ n = 0; for (i = 6; i <= NF; i++) { split($i, kv, "="); n += kv[2] } print n }' \
    <<<"$line")
  RPS[$name]=$(awk -v r="$requests" -v d="$duration_us" 'BEGIN { printf "%.0f", r * 1e6 / d }')
  P50[$name]=$p50
  P99[$name]=$p99
  ERRORS[$name]="wrk: $errors errors or non-2xx of $requests"

  sleep 1
  log "$name: fixed rate: oha, $RATE req/s, $CONNECTIONS connections, ${DURATION} s"
  local ticks0="0 0" ticks1="0 0"
  [ -n "$pg" ] && ticks0=$(cpu_ticks "$pg")
  run_load "$dir/oha.json" oha --no-tui --output-format json --latency-correction \
    --wait-ongoing-requests-after-deadline -z "${DURATION}s" -c "$CONNECTIONS" -q "$RATE" "$url" ||
    die "$name: oha failed (see $dir/oha.json)"
  [ -n "$pg" ] && ticks1=$(cpu_ticks "$pg")
  local ok total
  ok=$(jq '.statusCodeDistribution["200"] // 0' "$dir/oha.json")
  total=$(jq '([.statusCodeDistribution[]] | add // 0) + ([.errorDistribution[]] | add // 0)' \
    "$dir/oha.json")
  FIX_RPS[$name]=$(jq '.summary.requestsPerSec | floor' "$dir/oha.json")
  FIX_P50[$name]=$(jq '.latencyPercentiles.p50 * 1e6 | floor' "$dir/oha.json")
  FIX_P99[$name]=$(jq '.latencyPercentiles.p99 * 1e6 | floor' "$dir/oha.json")
  ERRORS[$name]="${ERRORS[$name]}; oha: $((total - ok)) errors or non-200 of $total"

  if [ -n "$pg" ]; then
    local user system
    user=$((${ticks1% *} - ${ticks0% *}))
    system=$((${ticks1#* } - ${ticks0#* }))
    CPU_US[$name]=$(awk -v t=$((user + system)) -v hz="$CLK_TCK" -v n="$ok" \
      'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "" }')
    CPU_SPLIT[$name]=$(awk -v u="$user" -v s="$system" -v hz="$CLK_TCK" -v n="$ok" \
      'BEGIN { if (n > 0) printf "CPU %.1f µs user + %.1f µs system per request", u * 1e6 / hz / n, s * 1e6 / hz / n }')
    RSS_KB[$name]=$(peak_rss_kb "$pg")
    stop_group "$pg"
  fi
  log "$name: ${RPS[$name]} req/s max; ${FIX_RPS[$name]} req/s fixed; ${ERRORS[$name]}"
}

# ---------------------------------------------------------------------------------------------------
# The table.

fmt_us() {
  awk -v u="$1" 'BEGIN { if (u == "") print "—"; else if (u < 1000) printf "%d µs", u;
    else if (u < 100000) printf "%.2f ms", u / 1000; else printf "%.0f ms", u / 1000 }'
}
fmt_int() { awk -v n="$1" 'BEGIN { if (n == "") print "—"; else printf "%d", n }'; }
fmt_mb() { awk -v k="$1" 'BEGIN { if (k == "" || k == 0) print "—"; else printf "%.1f MB", k / 1024 }'; }

# cell VALUE HAPROXY_VALUE FORMATTED: "FORMATTED (ratio×)" when both numbers exist.
cell() {
  local v=$1 h=$2 text=$3
  if [ -n "$v" ] && [ -n "$h" ] && [ "$v" != 0 ] && [ "$h" != 0 ]; then
    awk -v v="$v" -v h="$h" -v t="$text" 'BEGIN { printf "%s (%.2f×)", t, v / h }'
  else
    printf '%s' "$text"
  fi
}

label() {
  case $1 in
  direct) echo "direct (no proxy)" ;;
  haproxy) echo "HAProxy $HAPROXY_VERSION" ;;
  nginx) echo "nginx $NGINX_VERSION" ;;
  sidecar) echo "meshwork sidecar" ;;
  esac
}

report() {
  local h=haproxy
  echo "## The sidecar against HAProxy and nginx"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores, $CPU_MODEL; Linux $(uname -r);"
  echo "meshwork $GIT_REV; wrk $WRK_VERSION (max throughput), oha $OHA_VERSION (fixed rate);" \
    "load average before / after: $LOADAVG_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg)."
  [[ " $TARGETS " == *" sidecar "* ]] && echo "Sidecar binary: $SIDECAR_BIN."
  echo "Layout: load generator on core $LOAD_CPU, proxy on core $PROXY_CPU (one worker thread)," \
    "both backends on core $BACKEND_CPU."
  echo "Load: $CONNECTIONS keep-alive connections; ${DURATION} s at max throughput (wrk) then" \
    "${DURATION} s at $RATE req/s (oha, latency-corrected); GET / of a 13-byte body."
  echo
  echo "| target | req/s (max) | p50 (max) | p99 (max) | p50 at ${RATE}/s | p99 at ${RATE}/s |" \
    "CPU µs/req at ${RATE}/s | peak RSS |"
  echo "|---|--:|--:|--:|--:|--:|--:|--:|"
  local t
  for t in $TARGETS; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$t")" \
      "$(cell "${RPS[$t]}" "${RPS[$h]:-}" "$(fmt_int "${RPS[$t]}")")" \
      "$(cell "${P50[$t]}" "${P50[$h]:-}" "$(fmt_us "${P50[$t]}")")" \
      "$(cell "${P99[$t]}" "${P99[$h]:-}" "$(fmt_us "${P99[$t]}")")" \
      "$(cell "${FIX_P50[$t]}" "${FIX_P50[$h]:-}" "$(fmt_us "${FIX_P50[$t]}")")" \
      "$(cell "${FIX_P99[$t]}" "${FIX_P99[$h]:-}" "$(fmt_us "${FIX_P99[$t]}")")" \
      "$(cell "${CPU_US[$t]:-}" "${CPU_US[$h]:-}" "${CPU_US[$t]:-—}")" \
      "$(cell "${RSS_KB[$t]:-}" "${RSS_KB[$h]:-}" "$(fmt_mb "${RSS_KB[$t]:-}")")"
  done
  echo
  echo "Ratios are to HAProxy's figure (for req/s higher is better; for the rest lower is better)."
  echo "CPU is the proxy's user + system time during the fixed-rate run divided by the 200" \
    "responses; peak RSS is VmHWM of the serving process after both runs."
  for t in $TARGETS; do
    local fixed=${FIX_RPS[$t]}
    if [ "$fixed" -lt $((RATE * 95 / 100)) ]; then
      echo "- $(label "$t"): the fixed-rate run reached only $fixed req/s of $RATE."
    fi
  done
  for t in $TARGETS; do
    echo "- $(label "$t"): ${ERRORS[$t]}; backends answering: ${SEEN[$t]}${CPU_SPLIT[$t]:+; ${CPU_SPLIT[$t]}}."
  done
}

# ---------------------------------------------------------------------------------------------------

main() {
  check_settings
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  install_deps
  [[ " $TARGETS " == *" sidecar "* ]] && build_sidecar

  local cores
  cores=$(nproc)
  if [ "$cores" -lt 2 ]; then
    log "warning: $cores core: running unpinned"
    PINNING=0
  fi

  CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  CPU_MODEL=${CPU_MODEL:-unknown CPU}
  HAPROXY_VERSION=$(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }')
  NGINX_VERSION=$(nginx -v 2>&1 | sed -E 's|.*nginx/([^ ]+).*|\1|')
  WRK_VERSION=$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }' || true)
  OHA_VERSION=$(oha --version 2>/dev/null | awk '{ print $2 }')
  GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "(not a git checkout)")

  LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
  RUN_DIR="$OUT/proxy-$(date -u +%Y%m%d-%H%M%S)"
  mkdir -p "$RUN_DIR"
  log "outputs in $RUN_DIR"

  BACKEND_A_PORT=$((PORT_BASE + 1))
  BACKEND_B_PORT=$((PORT_BASE + 2))
  local b port
  for b in A B; do
    [ "$b" = A ] && port=$BACKEND_A_PORT || port=$BACKEND_B_PORT
    port_free "$port" || die "127.0.0.1:$port is taken (set PORT_BASE)"
    mkdir -p "$RUN_DIR/backend-$b"
    render "$TEMPLATES/nginx-backend.conf.in" "$RUN_DIR/backend-$b/nginx.conf" "NAME=$b" \
      "PORT=$port" "DIR=$RUN_DIR/backend-$b" "USER=$(user_directive)"
    start_group "$RUN_DIR/backend-$b/server.log" "$BACKEND_CPU" nginx -p "$RUN_DIR/backend-$b" \
      -c "$RUN_DIR/backend-$b/nginx.conf" -e "$RUN_DIR/backend-$b/error.log" -g 'daemon off;'
    wait_port "$port" "$STARTED" "$RUN_DIR/backend-$b/server.log" || die "backend $b did not start"
  done

  local t
  for t in $TARGETS; do
    run_target "$t"
  done

  report | tee "$RUN_DIR/report.md"
  cp "$RUN_DIR/report.md" "$OUT/proxy-latest.md"
  log "saved $RUN_DIR/report.md and $OUT/proxy-latest.md"
}

main "$@"
