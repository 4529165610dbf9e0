#!/usr/bin/env bash
# A/B the sidecar's CPU per request: two builds, or one build with two sets of flags, measured in
# alternating runs so that drift on the machine hits both alike. Same setup as `npm run bench`:
# nginx upstream and wrk on core 0, the sidecar pinned to core 1, 64 keep-alive connections.
#
#   bench/ab.sh [-v VARIANT] [-r ROUNDS] [-s SECONDS] SPEC_A SPEC_B
#   SPEC: DIR[:FLAGS][|NODEFLAGS]   a checkout with dist/ built, extra `meshlet sidecar` flags (may
#         contain ':'), and Node flags replacing the shebang's (default: that build's main.js shebang
#         flags, bench/lib/node-flags.js), e.g. '.:--access-log 1|--max-semi-space-size=16'
#
#   bench/ab.sh /tmp/previous-release .                        # a regression hunt
#   bench/ab.sh '.:--access-log 0' '.:--access-log 1'           # what one feature costs
# VARIANT is one of bench/lib/configs.js's meshlet variants (default off).
set -euo pipefail
variant=off rounds=3 secs=5
while getopts v:r:s: o; do case $o in v) variant=$OPTARG ;; r) rounds=$OPTARG ;; s) secs=$OPTARG ;; *) exit 2 ;; esac; done
shift $((OPTIND - 1))
[ $# -eq 2 ] || { echo "usage: bench/ab.sh [-v VARIANT] [-r ROUNDS] [-s SECONDS] DIR[:FLAGS][|NODEFLAGS] DIR[:FLAGS][|NODEFLAGS]" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap '[ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null; rm -rf "$tmp"' EXIT
free() { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }
u1=$(free) u2=$(free) out=$(free) admin=$(free)
cat > "$tmp/nginx.conf" <<CONF
worker_processes 1; pid $tmp/nginx.pid; error_log $tmp/nginx.err; daemon on;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$u1; location / { return 200 "hello from upstream\n"; } }
  server { listen 127.0.0.1:$u2; location / { return 200 "hello from upstream\n"; } } }
CONF
taskset -c 0 nginx -c "$tmp/nginx.conf"
node -e "process.stdout.write(require('$here/bench/lib/configs').meshletPolicies('$variant',[$u1,$u2]))" > "$tmp/policies.json"
run() {
  local spec=$1 dir flags="" nodeflags=""
  if [[ $spec == *"|"* ]]; then nodeflags=${spec#*|}; spec=${spec%%|*}; fi
  dir=${spec%%:*}
  # The build's own Node flags (its main.js shebang) unless the spec gives its own.
  [[ -z $nodeflags ]] && nodeflags=$(node "$here/bench/lib/node-flags.js" "$dir/dist/src/cli/main.js")
  [[ $spec == *:* ]] && flags=${spec#*:}
  # shellcheck disable=SC2086
  taskset -c 1 node $nodeflags "$dir/dist/src/cli/main.js" sidecar --service bench --config "$tmp/policies.json" \
    --outbound "127.0.0.1:$out" --inbound 127.0.0.1:0 --admin "127.0.0.1:$admin" $flags > "$tmp/sidecar.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$admin/ready" >/dev/null && break; sleep 0.1; done
  taskset -c 0 wrk -t1 -c64 -d2s -H 'Host: upstream' "http://127.0.0.1:$out/" > /dev/null
  local t0 n t1
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  n=$(taskset -c 0 wrk -t1 -c64 "-d${secs}s" -H 'Host: upstream' "http://127.0.0.1:$out/" | awk '/requests in/{print $1}')
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  awk -v s="$1" -v t=$((t1 - t0)) -v n="$n" -v d="$secs" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%-40s %8d req/s  %6.1f us/req\n", s, n/d, t*1e6/hz/n}'
}
for _ in $(seq "$rounds"); do run "$1"; run "$2"; done
