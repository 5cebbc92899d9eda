#!/bin/sh
# make check-asan: build every library file, tool, unit test and helper with
# AddressSanitizer and UBSan in build-asan/, a copy of the sources (the
# normal build is not touched), and run the whole suite there.  A second run
# rebuilds only what changed.
set -eu
cd "$(dirname "$0")/.."
dst=build-asan
mkdir -p "$dst"

# Sources as they are now: stale ones go, changed ones come with their
# times, so make rebuilds just those.  The large read-only test data is
# linked, not copied.
find "$dst" -type f \( -name '*.c' -o -name '*.h' -o -name '*.bats' \) -delete
find Makefile lib bin tests man scripts -type f \
	\( -name '*.[ch]' -o -name '*.bats' -o -name '*.[0-9]' -o -name Makefile \
	   -o -path 'scripts/*' -o -path 'tests/fuzz/*' \) \
	! -path 'tests/data/*' -print | tar -cf - -T - | (cd "$dst" && tar -xf -)
[ -e "$dst/tests/data" ] || ln -s ../../tests/data "$dst/tests/data"
[ -e "$dst/data" ] || ln -s ../data "$dst/data"

flags='-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined'
# Tools exit through die() without freeing: leaks are checked where they
# matter, by tests/valgrind.bats, not at every exit here.
# Tests of out-of-memory paths ask for impossible sizes and want NULL back.
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Tests that limit address space (ulimit -v) skip: ASan reserves terabytes.
export SA_SANITIZED=1
exec make -C "$dst" CFLAGS="$flags" LDFLAGS='-fsanitize=address,undefined' check
