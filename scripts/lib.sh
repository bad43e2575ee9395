# Shared helpers for the scripts in this folder. Source it; do not run it.

# Run a command as root (directly when we are root, else through sudo).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Install Debian packages that are missing; `apt-get update` at most once per run.
ensure_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> installing ${missing[*]}" >&2
  if [ -z "${JCS_APT_UPDATED:-}" ]; then
    as_root apt-get update -q >&2
    export JCS_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "${missing[@]}" >&2
}

# protoc is needed by the build (our proto crate and etcd-client's build script).
ensure_protoc() {
  command -v protoc >/dev/null 2>&1 || ensure_packages protobuf-compiler
}

# The median of numbers read from stdin (separated by spaces or newlines), 3 decimals; the
# benchmarks report it over their rounds.
median() {
  tr ' ' '\n' | grep . | sort -g \
    | awk '{ v[NR] = $1 } END { printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Writes MIB MiB of zeros to a scratch file in DIR and deletes it, before a benchmark's first
# timed step. On a VM whose host backs guest memory only when it is first touched, writing
# to pages the guest never used runs ~3x slower than writing to pages it used and freed
# (measured: 16 GiB to a fresh machine's /dev/shm took 40.8 s, the same again 13.9 s). The
# freed pages are the ones the next files get, so without this the first step to touch new
# memory (tmpfs files, page cache) pays for it alone: a fresh machine's first download
# looked 2-3x slower than the same download repeated.
#   warm_space DIR MIB
warm_space() {
  local f
  f=$(mktemp "$1/.warm.XXXXXX")
  dd if=/dev/zero of="$f" bs=1M count="$2" status=none || true
  rm -f "$f"
}
