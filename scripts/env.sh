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

# Two checkouts can share the target folder above (a second clone, CI on this machine). Cargo
# keys our crate's build by its path inside the checkout, not the checkout's own path, and judges
# freshness by file times: after a build from another checkout, this one's older files look up
# to date, and the binaries keep the other checkout's paths (`env!("CARGO_MANIFEST_DIR")`, the
# fixtures the tests read). So when the folder was last built from elsewhere, this checkout's
# tracked files are touched once, and cargo rebuilds the crate from them.
checkout_stamp="$CARGO_TARGET_DIR/.tinytune-checkout"
if [ "$(cat "$checkout_stamp" 2>/dev/null || true)" != "$ROOT" ]; then
  if [ -s "$checkout_stamp" ] && git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    say "$CARGO_TARGET_DIR was last built from $(cat "$checkout_stamp"); marking this checkout's files as newer so that cargo rebuilds tinytune from them"
    (cd "$ROOT" && git ls-files -z | xargs -0 touch -c)
  fi
  echo "$ROOT" > "$checkout_stamp"
fi
