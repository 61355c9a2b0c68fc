# Shared by scripts/*: where builds go, and small helpers. Sourced, not run.
# A target folder outside the clone survives fresh clones on the same machine, so CI and a
# second checkout start warm. Override with CARGO_TARGET_DIR.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tinytune/target}"
export CARGO_TERM_PROGRESS_WHEN="${CARGO_TERM_PROGRESS_WHEN:-never}"
STATE_DIR="$HOME/.cache/tinytune"
mkdir -p "$STATE_DIR" "$CARGO_TARGET_DIR"
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\033[1m[tinytune]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[tinytune] error:\033[0m %s\n' "$*" >&2; exit 1; }

# The version of a crate as pinned in Cargo.lock.
locked_version() {
  awk -v n="$1" '$0=="name = \""n"\"" {getline; gsub(/version = |"/, ""); print; exit}' "$ROOT/Cargo.lock"
}

# Seconds since the script started, for progress lines.
SECONDS=0
elapsed() { printf '%dm%02ds' $((SECONDS / 60)) $((SECONDS % 60)); }
