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
