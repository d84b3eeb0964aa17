#!/usr/bin/env bash
# `just prometheus`: Prometheus and promtool (Debian's `prometheus`
# package) for the rule tests (promtool check/test rules) and the test
# against a real Prometheus; installed with apt-get if missing. The tests
# start their own server on a free port; where the package's postinst
# starts one as a system service (on port 9090), it is left alone.
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; then exit 0; fi
apt_install "/usr/bin/prometheus or /usr/bin/promtool" prometheus
