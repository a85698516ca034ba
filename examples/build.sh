#!/usr/bin/env bash
# Rebuilds the example functions from source. Needs only Zig from PyPI:
#   python3 -m pip install ziglang==0.17.1
# The built .wasm files are committed, so running gust or its tests needs no guest toolchain.
set -euo pipefail
cd "$(dirname "$0")"
for dir in hello wordcount; do
    python3 -m ziglang cc --target=wasm32-wasi -O2 -s -o "$dir/$dir.wasm" "$dir/$dir.c"
    echo "built examples/$dir/$dir.wasm ($(wc -c < "$dir/$dir.wasm") bytes)"
done
