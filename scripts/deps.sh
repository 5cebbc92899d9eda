#!/bin/sh
# Install the Debian packages sa needs, when missing: "deps.sh build" those
# of the build (and make demo), "deps.sh test" those the tests add (bats,
# mandoc, pkgconf, python3), "deps.sh" both.  As root this says in one line what it
# installs, then runs apt-get; otherwise it prints the exact command and
# fails.
build="gcc make libc6-dev libopenblas-dev zlib1g-dev"
test="bats bats-support bats-assert bats-file mandoc pkgconf python3"
case ${1:-all} in
build) pkgs=$build ;;
test) pkgs=$test ;;
all) pkgs="$build $test" ;;
*) echo "usage: deps.sh [build | test]" >&2; exit 64 ;;
esac
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
echo "deps: installing with apt-get:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq$missing >/dev/null
