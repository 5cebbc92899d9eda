#!/usr/bin/env bats
# scripts/demo.sh (make demo): the main job of the README, on the toy model
# and, when data/ holds them, on the shipped model and adapter.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	export SA_DEMO_DIR="$BATS_TEST_TMPDIR/demo"
}

@test "demo on the toy model: the delta carries the demonstration's label" {
	SA_MODEL=/nonexistent run sh "$ROOT/scripts/demo.sh"
	assert_success
	assert_line "StreamAdapter  chair -> green"
	refute_line "zero-shot      chair -> green"
	[ -s "$SA_DEMO_DIR/toy.delta" ]
	# the training stopped at a margin on every token of the answer, which
	# holds whatever kernels the CPU runs, not at a lucky step count
	last=$(grep "log-probabilities of the answer's tokens: " <<<"$output" | tail -n 1)
	[ -n "$last" ]
	awk '{ for (i = 1; i <= NF; i++) if ($i < log(0.52)) exit 1 }' <<<"${last##*: }"
}

@test "demo on the shipped model: answers side by side and the accuracy table" {
	[ -f "$ROOT/data/model.gguf" ] && [ -f "$ROOT/data/adapter.gguf" ] ||
		skip "no data/model.gguf and data/adapter.gguf"
	run sh "$ROOT/scripts/demo.sh"
	assert_success
	assert_line --regexp '^query +zero-shot +ICL +StreamAdapter +expected$'
	# eight answered queries, then sa-eval's row for the task
	[ "$(sed -n '/^query /,/^$/p' <<<"$output" | grep -c .)" -eq 9 ]
	assert_line --regexp '^\| plural \| seen \| gen \| 50 \|( [0-9.]+ \|){4} [0-9]+ \|$'
	# then held-out pairs, answered from the context and from a delta
	assert_line --regexp '^word +ICL +StreamAdapter +expected$'
	assert_line --regexp '^recalled: ICL [0-9]+ of 16, StreamAdapter [0-9]+ of 16$'
}

# scripts/deps.sh against stand-ins for dpkg-query (nothing installed), id
# and apt-get (which logs its arguments).
fake_debian() {
	mkdir -p "$BATS_TEST_TMPDIR/shim"
	cd "$BATS_TEST_TMPDIR/shim"
	printf '#!/bin/sh\nexit 1\n' > dpkg-query
	printf '#!/bin/sh\necho %s\n' "$1" > id
	printf '#!/bin/sh\necho "$*" >> %s/apt.log\n' "$BATS_TEST_TMPDIR" > apt-get
	chmod +x dpkg-query id apt-get
	cd - > /dev/null
	PATH="$BATS_TEST_TMPDIR/shim:$PATH"
}

@test "deps.sh build installs the build's packages only, and says so in one line first" {
	fake_debian 0
	run --separate-stderr sh "$ROOT/scripts/deps.sh" build
	assert_success
	[ "$stderr" = "deps: installing with apt-get: gcc make libc6-dev libopenblas-dev zlib1g-dev" ]
	run cat "$BATS_TEST_TMPDIR/apt.log"
	assert_line "install -y -qq gcc make libc6-dev libopenblas-dev zlib1g-dev"
	refute_output --partial bats
	refute_output --partial mandoc
}

@test "deps.sh test adds bats, mandoc, pkgconf and python3; deps.sh alone (.ci/run, make check) installs both sets" {
	fake_debian 0
	run -0 sh "$ROOT/scripts/deps.sh" test
	assert_output "deps: installing with apt-get: bats bats-support bats-assert bats-file mandoc pkgconf python3"
	rm "$BATS_TEST_TMPDIR/apt.log"
	run -0 sh "$ROOT/scripts/deps.sh"
	run grep '^install' "$BATS_TEST_TMPDIR/apt.log"
	assert_output "install -y -qq gcc make libc6-dev libopenblas-dev zlib1g-dev bats bats-support bats-assert bats-file mandoc pkgconf python3"
	run -64 sh "$ROOT/scripts/deps.sh" everything
}

@test "deps.sh not as root: the exact apt-get line, no install" {
	fake_debian 1000
	run -1 sh "$ROOT/scripts/deps.sh" build
	assert_line "deps: run: sudo apt-get install -y gcc make libc6-dev libopenblas-dev zlib1g-dev"
	[ ! -e "$BATS_TEST_TMPDIR/apt.log" ]
}

@test "make demo asks for the build's packages, make check for all" {
	run -0 make -C "$ROOT" -n demo
	assert_line "sh scripts/deps.sh build"
	run -0 make -C "$ROOT" -n check
	assert_line "sh scripts/deps.sh"
}
