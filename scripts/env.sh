# Sourced by kdfed's scripts: shared build locations outside the clone, so that every
# clone (and CI) reuses one cargo target folder and the test bed's binary cache.
export KDFED_CACHE="${KDFED_CACHE:-$HOME/.cache/kdfed}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KDFED_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
kdfed_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

# Debian packages the scripts and tests need.
kdfed_need_packages() {
  local missing=()
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  # The test bed runs exec'd commands of fake pods in mount namespaces with overlays, and
  # tests build setup packages with tar.
  command -v unshare >/dev/null || missing+=(util-linux)
  command -v mount >/dev/null || missing+=(mount)
  command -v tar >/dev/null || missing+=(tar)
  # scripts/test.sh reads the test binaries from cargo's JSON messages.
  command -v jq >/dev/null || missing+=(jq)
  # The completion tests run the generated scripts in real shells.
  command -v zsh >/dev/null || missing+=(zsh)
  # promtool checks the alert rules and dashboard queries; Prometheus for observability tests.
  command -v promtool >/dev/null || missing+=(prometheus)
  # The partition test skews a spoke's wall clock with libfaketime.
  [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || missing+=(libfaketime)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "[kdfed] installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The console's browser test drives headless Chromium over WebDriver (only the tests need
# it; the local fleet does not).
kdfed_need_browser() {
  local missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "[kdfed] installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Rust components used by the checks.
kdfed_need_rust() {
  command -v cargo >/dev/null || { echo "cargo is required (rustup)" >&2; exit 1; }
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
}
