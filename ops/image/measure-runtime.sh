#!/bin/sh
# What the image's runtime stage holds, measured without a container engine: builds the wheel as the
# Containerfile's builder does, installs it the same way (binary wheels, byte-compiled, no pip) into a fresh
# virtual environment, and compares with the dependency set before issue 18 (litestar[standard]) and with
# a virtual environment that carries pip and setuptools, as the runtime stage used to.
#
#   sh ops/image/measure-runtime.sh [workdir]        (needs python3.11 with venv, cargo; uses PyPI)
#
# Sizes are `du -s --apparent-size` of each environment; the base image (python:3.11-slim) comes on top.
set -eu
PYTHON=${PYTHON:-python3.11}
WORK=${1:-$(mktemp -d)}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

"$PYTHON" -m venv "$WORK/build"
"$WORK/build/bin/pip" install --quiet "maturin>=1.7,<2"
"$WORK/build/bin/maturin" build --quiet --release --strip --compatibility linux --locked \
    --manifest-path "$ROOT/rust_core/Cargo.toml" --out "$WORK/dist" >/dev/null
WHEEL=$(ls "$WORK"/dist/schedsvc-*.whl)

install_env() {  # install_env <venv> <venv options> <requirements...>
    target=$1; options=$2; shift 2
    "$PYTHON" -m venv $options "$target"
    "$WORK/build/bin/pip" --python "$target/bin/python" install --quiet --only-binary=:all: --compile "$@"
}
install_env "$WORK/lean" --without-pip "$WORK/dist/$(basename "$WHEEL")"
install_env "$WORK/standard" --without-pip "$WORK/dist/$(basename "$WHEEL")" "litestar[standard]"
install_env "$WORK/with-pip" "" "$WORK/dist/$(basename "$WHEEL")"

size() { du -s --apparent-size --block-size=1K "$1" | cut -f1; }
echo "runtime environment (what the image adds to python:3.11-slim), KiB:"
echo "  now (no pip):                    $(size "$WORK/lean")"
echo "  with litestar[standard] extras:  $(size "$WORK/standard")"
echo "  with pip and setuptools:         $(size "$WORK/with-pip")"
echo
echo "distributions in the image's environment (KiB installed, from each RECORD):"
"$WORK/lean/bin/python" - <<'PY'
import importlib.metadata as md
import os

rows = []
for dist in md.distributions():
    files = [f for f in dist.files or [] if os.path.exists(f.locate())]
    rows.append((sum(os.path.getsize(f.locate()) for f in files) // 1024, dist.metadata["Name"], dist.version))
for size, name, version in sorted(rows, reverse=True):
    print(f"  {size:>7}  {name} {version}")
PY
echo
echo "only in the litestar[standard] environment:"
"$WORK/standard/bin/python" -c "import importlib.metadata as md; print(' '.join(sorted(d.metadata['Name'] for d in md.distributions())))" > "$WORK/standard.txt"
"$WORK/lean/bin/python" -c "import importlib.metadata as md; print(' '.join(sorted(d.metadata['Name'] for d in md.distributions())))" > "$WORK/lean.txt"
tr ' ' '\n' < "$WORK/standard.txt" | sort > "$WORK/a"; tr ' ' '\n' < "$WORK/lean.txt" | sort > "$WORK/b"
echo "  $(comm -23 "$WORK/a" "$WORK/b" | tr '\n' ' ')"
