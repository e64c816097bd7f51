#!/usr/bin/env bash
# Installs headless Chromium from Debian's packages when it is missing, for
# the console's browser test (make test-ui). Exits non-zero, with one line
# on stderr, when it cannot be installed (not root, no apt-get, no network).
set -uo pipefail
for b in chromium chromium-browser; do
	if command -v "$b" >/dev/null 2>&1; then
		exit 0
	fi
done
if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-chromium: no apt-get on this machine; install Chromium by hand to run the console's browser test" >&2
	exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		SUDO="sudo -n"
	else
		echo "install-chromium: not root and no password-less sudo; run 'apt-get install -y chromium' as root" >&2
		exit 1
	fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends chromium >/tmp/install-chromium.log 2>&1; then
	$SUDO apt-get update >>/tmp/install-chromium.log 2>&1
	if ! $SUDO apt-get install -y --no-install-recommends chromium >>/tmp/install-chromium.log 2>&1; then
		echo "install-chromium: apt-get install chromium failed (see /tmp/install-chromium.log)" >&2
		exit 1
	fi
fi
command -v chromium >/dev/null 2>&1
