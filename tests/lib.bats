#!/usr/bin/env bats
# libsa's C unit tests, one bats test per program (built by make check).

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup() {
	ROOT="$BATS_TEST_DIRNAME/.."
}

@test "json: values, escapes, error columns, depth limit, writers, random bytes" {
	run "$ROOT/tests/unit/test_json"
	assert_success
	assert_output --partial ", 0 failed"
}

@test "sample: greedy, log-probabilities, top-k, top-p, min-p, temperature, seeded stream" {
	run "$ROOT/tests/unit/test_sample"
	assert_success
	assert_output --partial ", 0 failed"
}

@test "memory: recall of what was written, exact composition, float sums, gradients against finite differences" {
	run "$ROOT/tests/unit/test_memory"
	assert_success
	assert_output --partial ", 0 failed"
}

# The usage block at the top of sa.h, without its comment's " *\t".
header_usage() {
	awk '/^ \* Contents:/ { exit } f { print } /^ \* The same lines are tests\/unit\/test_usage.c/ { f = 1 }' \
	    "$ROOT/lib/sa.h" | sed -e '1{/^ \*$/d}' -e '${/^ \*$/d}' -e 's/^ \*\t\{0,1\}//'
}

@test "sa.h's usage example is tests/unit/test_usage.c's and sa(3)'s, and it runs: the text sa-run gives" {
	run diff <(header_usage) <(awk '/usage: end/ { f = 0 } f { print } /usage: begin/ { f = 1 }' \
	    "$ROOT/tests/unit/test_usage.c" | sed 's/^\t//')
	assert_success
	[ "$(header_usage | wc -l)" -ge 10 ]
	# and sa(3)'s
	run diff <(header_usage) <(sed -n '/^\.Bd -literal/,/^\.Ed/p' "$ROOT/man/sa.3" |
	    sed '1d; $d; s/\\e/\\/g')
	assert_success
	cd "$BATS_TEST_TMPDIR"
	"$ROOT/tests/helpers/mkmodel" --dim 64 --layers 2 --heads 4 --kv-heads 2 --ctx 128 -o m.gguf
	"$ROOT/bin/sa-init" -m m.gguf -o a.gguf
	printf 'cat -> chat\ndog -> chien\nbird -> oiseau\n' > demos.txt
	run "$ROOT/tests/unit/test_usage" m.gguf a.gguf demos.txt "dog ->"
	assert_success
	[ -n "$output" ]
	SA_CACHE_DIR="$BATS_TEST_TMPDIR/cache" "$ROOT/bin/sa-run" -m m.gguf -a a.gguf \
	    --demos demos.txt --temp 0 -n 16 -p "dog ->" > want
	"$ROOT/tests/unit/test_usage" m.gguf a.gguf demos.txt "dog ->" | cmp - want
}

@test "sa.h's contents list its sections, in their order" {
	local listed sections
	# the left column, 32 characters wide; names are separated by commas
	listed=$(awk '/^ \* Contents:/ { f = 1; next } f && /^ \*$/ { exit }
	    f { n = split(substr($0, 6, 32), a, ",")
		for (i = 1; i <= n; i++) { sub(/^ +/, "", a[i]); sub(/ +$/, "", a[i]); if (a[i] != "") print a[i] } }' \
	    "$ROOT/lib/sa.h")
	sections=$(sed -n 's/^\/\* -* \(.*\) \*\/$/\1/p' "$ROOT/lib/sa.h")
	diff <(echo "$listed") <(echo "$sections")
}
