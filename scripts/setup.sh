#!/usr/bin/env bash
# Installs what building and testing pathfed needs on Debian 12, idempotently: packages that are
# already present are left alone, so running it again costs a few dpkg queries.
set -euo pipefail

packages=(
  pkg-config        # locates libopenslide for the build
  libopenslide-dev  # the OpenSlide backend (openslide-sys)
  libclang-dev      # bindgen, which generates the OpenSlide bindings
  clang
  build-essential   # the C compiler for mimalloc and the linker
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install the Rust toolchain (1.95 or newer) with rustup first" >&2
  exit 1
fi
need="1.95"
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
  echo "setup: rustc $have is older than $need; run 'rustup update'" >&2
  exit 1
fi
