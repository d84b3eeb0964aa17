#!/usr/bin/env bash
# `just bench-cluster [ORDERS]`: starts the native cluster if it is down, then
# `orders-bench --cluster` measures it with 1 and 2 replicas and prints a table.
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_tool wrk wrk
scripts/up-cluster.sh >/dev/null
cargo build --release --bin orders-bench
"$TARGET_DIR/release/orders-bench" --cluster "${1:-30000}" --service "$TARGET_DIR/release/order-service"
