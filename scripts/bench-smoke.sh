#!/usr/bin/env bash
# `just bench-smoke`: the bench harness end to end with tiny counts on a
# debug build, in seconds (CI runs it; it writes nothing).
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_tool wrk wrk
cargo build --bin order-service --bin orders-bench
"$TARGET_DIR/debug/orders-bench" --smoke --service "$TARGET_DIR/debug/order-service"
