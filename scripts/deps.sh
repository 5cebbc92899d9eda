#!/bin/sh
# Install the Debian packages the build and the tests need, when missing.
# As root this runs apt-get; otherwise it prints the exact command and fails.
pkgs="gcc make libc6-dev libopenblas-dev zlib1g-dev bats bats-support bats-assert bats-file mandoc"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing packages:$missing" >&2
	echo "deps: run: sudo apt-get install -y$missing" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq$missing >/dev/null
