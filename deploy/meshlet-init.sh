#!/bin/sh
# meshlet-init: sends a pod's TCP traffic through its meshlet sidecar, the way istio-init does.
#
# Run inside the pod's network namespace (the injected meshlet-init init container, with
# NET_ADMIN and NET_RAW), before the proxy and the app start:
#   outbound TCP from the app        -> 127.0.0.1:15001 (the sidecar's outbound listener)
#   inbound TCP to the pod's address -> :15006          (the sidecar's inbound listener)
# Not intercepted: anything the proxy itself sends (its uid and gid, 1337: otherwise it would
# loop into itself), traffic to loopback, and the ports and CIDRs excluded below. IPv4 only.
#
# Running it again replaces the rules (safe and idempotent); --remove takes them all out.
# The nat rules live in chains of their own (MESHLET_*), loaded with one iptables-restore, so a
# pod never sees half a rule set.
#
# usage: meshlet-init.sh [--proxy-uid 1337] [--proxy-gid UID] [--inbound-port 15006]
#          [--outbound-port 15001] [--inbound-ports '*'|P,P] [--exclude-inbound-ports P,P]
#          [--exclude-outbound-ports P,P] [--exclude-outbound-cidrs CIDR,CIDR] [--dry-run]
#        meshlet-init.sh --remove
set -eu

PROXY_UID=1337
PROXY_GID=
INBOUND_PORT=15006
OUTBOUND_PORT=15001
INBOUND_PORTS='*'
EXCLUDE_INBOUND_PORTS=
EXCLUDE_OUTBOUND_PORTS=
EXCLUDE_OUTBOUND_CIDRS=
MODE=apply
IPT=${IPTABLES:-iptables}
IPT_RESTORE=${IPTABLES_RESTORE:-iptables-restore}

die() { echo "meshlet-init: $*" >&2; exit 2; }

is_port() { case $1 in '' | *[!0-9]*) return 1 ;; esac; [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; esac; }

# A comma-separated list of ports, validated; prints them space-separated.
ports() {
  what=$1 list=$2 out=
  IFS=,
  for p in $list; do
    p=$(echo "$p" | tr -d ' ')
    [ -z "$p" ] && continue
    is_port "$p" || { unset IFS; die "$what: expected comma-separated ports (1-65535), got '$p'"; }
    out="$out $p"
  done
  unset IFS
  echo "$out"
}

cidrs() {
  what=$1 list=$2 out=
  IFS=,
  for c in $list; do
    c=$(echo "$c" | tr -d ' ')
    [ -z "$c" ] && continue
    echo "$c" | grep -Eq '^([0-9]{1,3}\.){3}[0-9]{1,3}(/([0-9]|[12][0-9]|3[0-2]))?$' || { unset IFS; die "$what: expected comma-separated IPv4 CIDRs such as 10.0.0.0/8, got '$c'"; }
    [ -z "$(echo "${c%/*}" | awk -F. '$1>255||$2>255||$3>255||$4>255{print "bad"}')" ] || { unset IFS; die "$what: '$c' is not an IPv4 address"; }
    out="$out $c"
  done
  unset IFS
  echo "$out"
}

while [ $# -gt 0 ]; do
  flag=$1
  case $flag in
    --remove) MODE=remove; shift; continue ;;
    --dry-run) MODE=dry-run; shift; continue ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  esac
  [ $# -ge 2 ] || die "$flag needs a value"
  case $flag in
    --proxy-uid) PROXY_UID=$2 ;;
    --proxy-gid) PROXY_GID=$2 ;;
    --inbound-port) INBOUND_PORT=$2 ;;
    --outbound-port) OUTBOUND_PORT=$2 ;;
    --inbound-ports) INBOUND_PORTS=$2 ;;
    --exclude-inbound-ports) EXCLUDE_INBOUND_PORTS=$2 ;;
    --exclude-outbound-ports) EXCLUDE_OUTBOUND_PORTS=$2 ;;
    --exclude-outbound-cidrs) EXCLUDE_OUTBOUND_CIDRS=$2 ;;
    *) die "unknown flag $flag (see --help)" ;;
  esac
  shift 2
done

CHAINS="MESHLET_INBOUND MESHLET_IN_REDIRECT MESHLET_OUTPUT MESHLET_REDIRECT"

# Takes our jumps out of the built-in chains (every copy), then empties and deletes our chains.
remove() {
  for hook in "PREROUTING MESHLET_INBOUND" "OUTPUT MESHLET_OUTPUT"; do
    set -- $hook
    while $IPT -w -t nat -D "$1" -p tcp -j "$2" 2>/dev/null; do :; done
  done
  for c in $CHAINS; do $IPT -w -t nat -F "$c" 2>/dev/null || true; done
  for c in $CHAINS; do $IPT -w -t nat -X "$c" 2>/dev/null || true; done
}

if [ "$MODE" = remove ]; then
  remove
  echo "meshlet-init: interception removed"
  exit 0
fi

is_uint "$PROXY_UID" || die "--proxy-uid: expected a number, got '$PROXY_UID'"
[ -n "$PROXY_GID" ] || PROXY_GID=$PROXY_UID
is_uint "$PROXY_GID" || die "--proxy-gid: expected a number, got '$PROXY_GID'"
is_port "$INBOUND_PORT" || die "--inbound-port: expected a port (1-65535), got '$INBOUND_PORT'"
is_port "$OUTBOUND_PORT" || die "--outbound-port: expected a port (1-65535), got '$OUTBOUND_PORT'"
[ "$INBOUND_PORTS" = '*' ] || INBOUND_PORTS=$(ports --inbound-ports "$INBOUND_PORTS")
EXCLUDE_INBOUND_PORTS=$(ports --exclude-inbound-ports "$EXCLUDE_INBOUND_PORTS")
EXCLUDE_OUTBOUND_PORTS=$(ports --exclude-outbound-ports "$EXCLUDE_OUTBOUND_PORTS")
EXCLUDE_OUTBOUND_CIDRS=$(cidrs --exclude-outbound-cidrs "$EXCLUDE_OUTBOUND_CIDRS")

rules() {
  echo '*nat'
  for c in $CHAINS; do echo ":$c - [0:0]"; done
  # Inbound: everything arriving for the pod, bar the excluded ports, goes to the inbound listener.
  echo "-A PREROUTING -p tcp -j MESHLET_INBOUND"
  for p in $EXCLUDE_INBOUND_PORTS; do echo "-A MESHLET_INBOUND -p tcp --dport $p -j RETURN"; done
  if [ "$INBOUND_PORTS" = '*' ]; then
    echo "-A MESHLET_INBOUND -p tcp -j MESHLET_IN_REDIRECT"
  else
    for p in $INBOUND_PORTS; do echo "-A MESHLET_INBOUND -p tcp --dport $p -j MESHLET_IN_REDIRECT"; done
  fi
  echo "-A MESHLET_IN_REDIRECT -p tcp -j REDIRECT --to-ports $INBOUND_PORT"
  # Outbound: what the app sends out of the pod goes to the outbound listener.
  echo "-A OUTPUT -p tcp -j MESHLET_OUTPUT"
  echo "-A MESHLET_OUTPUT -m owner --uid-owner $PROXY_UID -j RETURN"
  echo "-A MESHLET_OUTPUT -m owner --gid-owner $PROXY_GID -j RETURN"
  echo "-A MESHLET_OUTPUT -o lo -j RETURN"
  echo "-A MESHLET_OUTPUT -d 127.0.0.0/8 -j RETURN"
  for p in $EXCLUDE_OUTBOUND_PORTS; do echo "-A MESHLET_OUTPUT -p tcp --dport $p -j RETURN"; done
  for c in $EXCLUDE_OUTBOUND_CIDRS; do echo "-A MESHLET_OUTPUT -d $c -j RETURN"; done
  echo "-A MESHLET_OUTPUT -j MESHLET_REDIRECT"
  echo "-A MESHLET_REDIRECT -p tcp -j REDIRECT --to-ports $OUTBOUND_PORT"
  echo 'COMMIT'
}

if [ "$MODE" = dry-run ]; then
  rules
  exit 0
fi

command -v "$IPT" >/dev/null 2>&1 || die "$IPT not found: the init image needs iptables"
# Idempotent: our jumps are taken out first; the restore re-creates (and empties) our chains.
for hook in "PREROUTING MESHLET_INBOUND" "OUTPUT MESHLET_OUTPUT"; do
  set -- $hook
  while $IPT -w -t nat -D "$1" -p tcp -j "$2" 2>/dev/null; do :; done
done
rules | $IPT_RESTORE -w --noflush
echo "meshlet-init: outbound TCP -> $OUTBOUND_PORT, inbound TCP -> $INBOUND_PORT (uid/gid $PROXY_UID/$PROXY_GID and loopback excluded)"
