#!/usr/bin/env bash
# Installs what building and testing pathfed needs on Debian 12, idempotently: whatever is already
# present is left alone, so running it again costs a few dpkg queries and prints nothing.
set -euo pipefail

# Everything below is relative to the repository root, wherever the script is called from.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Each entry is "package" or "package:command"; with a command, that command being on PATH also
# counts as present, so a Node.js from another source (NodeSource ships npm inside its nodejs,
# which conflicts with Debian's npm package) is not fought over.
packages=(
  pkg-config        # locates libopenslide for the build
  libopenslide-dev  # the OpenSlide backend (openslide-sys)
  libclang-dev      # bindgen, which generates the OpenSlide bindings
  clang
  build-essential   # the C compiler for mimalloc and the linker
  postgresql        # initdb/pg_ctl/postgres for throwaway test clusters; the system cluster is unused
  chromium:chromium # headless browser for the web tests
  poppler-utils:pdftoppm # pdftoppm, pdftotext, pdffonts: render and read report PDFs in tests
  fonts-ipaexfont-gothic # IPAexGothic (IPA Font License): built into report PDFs for Japanese
  nodejs:node       # builds and tests the web client
  npm:npm
  python3-venv      # the venv holding moto, the S3 stand-in for tests
  python3-pip
  ca-certificates   # HTTPS to the package registries
  openssl:openssl   # s_client: the TLS test's independent TLS client
  libturbojpeg0     # wsidicomizer (the DICOM fixtures' writer) reads JPEG tiles with it
  curl
)

missing=()
for entry in "${packages[@]}"; do
  p=${entry%%:*}
  cmd=${entry#*:}
  [ "$cmd" != "$entry" ] && command -v "$cmd" >/dev/null 2>&1 && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # Installing postgresql may create and try to start the distro's "main" cluster; the tests never
  # use it (each test binary runs its own cluster on a free port), so whether it runs is irrelevant.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The tests run initdb/pg_ctl from here rather than relying on the system cluster or PATH.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  echo "setup: no /usr/lib/postgresql/*/bin/initdb after installing postgresql" >&2
  exit 1
fi

# The Python tools the tests use as stand-ins, writers and oracles, in one venv built with
# Debian's interpreter explicitly (not whatever python3 is first on PATH, a pyenv shim, say), so
# every machine builds the same venv. One pip run installs whatever is missing (one dependency
# resolution, not one per tool):
# - moto_server, the S3 stand-in;
# - numpy and safetensors, which write the reference weights and logits of the weight import;
# - aiosmtpd, the mail server the notification test mails its notices to;
# - tifffile and imagecodecs, which write Aperio JPEG 2000 fixtures; wsidicomizer, which converts
#   a slide to a DICOM WSI series (wsidicom reads it back); the IIIF Image API validator; and
#   dicomweb-client (with wsidicom's DICOMweb client), which read slides through DICOMweb.
venv=.tools/venv
python_tools=("moto[server]==5.*" numpy safetensors "aiosmtpd==1.*" tifffile imagecodecs
  wsidicomizer iiif-validator dicomweb-client)
if [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" -c \
  'import numpy, safetensors, aiosmtpd, tifffile, imagecodecs, wsidicomizer, wsidicom, iiif_validator, dicomweb_client' \
  2>/dev/null; then
  echo "setup: installing the Python test tools into $venv"
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${python_tools[@]}"
fi

# The web client's dependencies, once it exists. Reinstall when the lock file is newer than
# node_modules; the touch afterwards marks node_modules current even when npm changed nothing.
if [ -f web/package.json ]; then
  lock=web/package-lock.json
  if [ ! -d web/node_modules ] || { [ -f "$lock" ] && [ "$lock" -nt web/node_modules ]; }; then
    echo "setup: installing web dependencies"
    npm_cmd=install
    [ -f "$lock" ] && npm_cmd=ci
    (cd web && npm "$npm_cmd" --no-audit --no-fund --loglevel=error)
    touch web/node_modules
  fi
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
