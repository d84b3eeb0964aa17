#!/usr/bin/env bash
# `just browser`: headless Chromium and chromedriver for the browser tests,
# installed with apt-get if missing.
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi
apt_install "/usr/bin/chromium or /usr/bin/chromedriver" chromium chromium-driver
