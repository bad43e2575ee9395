#!/usr/bin/env bash
# Crate-graph rules of STYLE.md §7.2: only the coordinator touches metadata, no server crate
# depends on another, and common depends on neither proto nor meta. Also: `unsafe` is denied
# workspace-wide and allowed in exactly one place (the jcs binary's mimalloc option call).
set -euo pipefail
cd "$(dirname "$0")/../.."
fail=0
deps() { cargo tree -e normal -p "$1" --prefix none --locked 2>/dev/null | awk '{print $1}' | sort -u; }
forbid() { # crate, forbidden dependency, reason
  if deps "$1" | grep -qx "$2"; then echo "layering: $1 must not depend on $2 ($3)"; fail=1; fi
}
for c in gateway agent client proto common; do forbid "$c" meta "only the coordinator touches metadata"; forbid "$c" etcd-client "only meta talks to etcd"; done
for c in gateway agent coordinator; do
  for other in gateway agent coordinator; do
    [ "$c" = "$other" ] || forbid "$c" "$other" "server crates meet only through proto + client"
  done
done
forbid common proto "common is below proto"
for dep in meta proto client coordinator agent gateway etcd-client; do
  forbid redundancy "$dep" "the redundancy engine is a pure library over common"
done
allowed=$(grep -rln --include='*.rs' 'allow(unsafe_code)' -- */src */tests 2>/dev/null | sort | tr '\n' ' ')
if [ "$allowed" != "cli/src/main.rs " ]; then
  echo "unsafe: only cli/src/main.rs may allow(unsafe_code); found in: ${allowed:-nothing}"; fail=1
fi
exit $fail
