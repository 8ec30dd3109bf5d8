# Installs what building and testing Weft needs, skipping what is already there.
# Sourced by scripts/serve and scripts/test; not meant to be run on its own.
#
#   ensure_site_tools   wasm32 target, cargo-leptos, the pinned wasm-bindgen-cli, wasm-opt
#   ensure_browser      Chromium and ChromeDriver (Debian packages)

set -euo pipefail

WEFT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WEFT_TOOLS="${WEFT_TOOLS:-$HOME/.cache/weft-tools}"
CARGO_LEPTOS_VERSION="0.3.11"
# cargo-leptos 0.3.11 needs a newer rustc than the project itself.
CARGO_LEPTOS_TOOLCHAIN="1.96"
BINARYEN_VERSION="132"

export PATH="$HOME/.cargo/bin:$WEFT_TOOLS/binaryen/node_modules/.bin:$PATH"

say() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }

# The wasm-bindgen version Cargo.lock pins; the CLI must match it exactly.
locked_wasm_bindgen() {
    awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$WEFT_ROOT/Cargo.lock"
}

ensure_site_tools() {
    if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
        say "adding the wasm32-unknown-unknown target"
        rustup target add wasm32-unknown-unknown
    fi

    if [ "$(cargo leptos --version 2>/dev/null | awk '{print $2}')" != "$CARGO_LEPTOS_VERSION" ]; then
        say "installing cargo-leptos $CARGO_LEPTOS_VERSION (about 20 minutes, once per machine)"
        rustup toolchain install "$CARGO_LEPTOS_TOOLCHAIN" --profile minimal
        cargo "+$CARGO_LEPTOS_TOOLCHAIN" install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked
    fi

    local wanted
    wanted="$(locked_wasm_bindgen)"
    if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wanted" ]; then
        say "installing wasm-bindgen-cli $wanted (it must match Cargo.lock)"
        cargo install wasm-bindgen-cli --version "$wanted" --force
    fi

    if [ "$(wasm-opt --version 2>/dev/null | awk '{print $3}')" != "$BINARYEN_VERSION" ]; then
        say "installing wasm-opt from npm binaryen@$BINARYEN_VERSION"
        command -v npm >/dev/null || apt_install nodejs npm
        npm install --silent --prefix "$WEFT_TOOLS/binaryen" "binaryen@$BINARYEN_VERSION"
    fi
}

apt_install() {
    say "installing $* with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

ensure_browser() {
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        apt_install chromium chromium-driver
    fi
}
