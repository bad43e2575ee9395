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
# timed step, and says when the machine hands freed memory back to its host.
#
# On a VM whose host backs guest memory only when it is touched, a write to memory the host
# does not back runs ~3x slower (measured: 16 GiB to a fresh machine's /dev/shm took 40.8 s,
# the same again 13.9 s). Memory never used since boot is such memory, and so is memory
# freed more than a few seconds ago when the guest kernel reports free pages to the host
# (virtio-balloon free page reporting: /sys/module/page_reporting/parameters/reported_kib
# grows). Then whichever step first writes to such memory (tmpfs files, page cache, a
# download's output) pays for it: the same 1 GiB download took 0.7 s or 2.9 s. Touching the
# space first helps with never-used memory; against reporting it only helps steps that
# follow within seconds, so warm_space prints how to switch reporting off for a run.
#   warm_space DIR MIB
warm_space() {
  local f p=/sys/module/page_reporting/parameters/page_reporting_order
  f=$(mktemp "$1/.warm.XXXXXX")
  dd if=/dev/zero of="$f" bs=1M count="$2" status=none || true
  rm -f "$f"
  if [ -r "$p" ] && [ "$(cat "$p")" -le 10 ]; then
    echo "note: this VM reports freed memory to its host (free page reporting, order $(cat "$p"));" \
      "writes to memory freed seconds earlier are slow and timings vary by up to 3x." \
      "For steadier figures, as root: echo 11 > $p (restore the old value after)." >&2
  fi
}
