#!/usr/bin/env bash
# `just bench`: installs wrk (apt) and oha (cargo) if missing, builds in
# release mode and runs the whole harness, which writes docs/benchmarks.md.
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_tool wrk wrk
if ! command -v oha >/dev/null; then
    echo "installing oha from crates.io (a few minutes, once) ..."
    cargo install --locked --quiet oha
fi
cargo build --release --bin order-service --bin orders-bench
"$TARGET_DIR/release/orders-bench" --service "$TARGET_DIR/release/order-service"
