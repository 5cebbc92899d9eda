#!/usr/bin/env bats
# The speed scripts (doc/speed.md) in their --dry-run modes: tiny models,
# seconds, no llama.cpp.  The real benchmarks never run here.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	T="$BATS_TEST_TMPDIR"
	export TMPDIR="$T"
	cd "$ROOT"
}

# field NAME of CSV row ROW (1 = first data row)
field() {
	awk -F, -v c="$2" -v r="$3" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) n = i }
	    NR == r + 1 { print $n }' "$1"
}

@test "bench-compare --dry-run: a table of libsa's prefill and decode speeds, samples in -o" {
	run --separate-stderr sh scripts/bench-compare.sh --dry-run -o "$T/out"
	assert_success
	assert_line --regexp '^\| tiny-f16 \| pp32 \| [0-9]+ \| [0-9.]+ \| - \| - \|'
	assert_line --regexp '^\| tiny-f16 \| tg8 \| [0-9]+ \| [0-9.]+ \| - \| - \|'
	assert_line --regexp '^\| tiny-q8_0 \| pp32 \|'
	assert_line --regexp '^\| tiny-q8_0 \| tg8 \|'
	assert_output --partial 'llama.cpp: not run (--dry-run)'
	assert_output --regexp 'libsa kernels (generic|avx2|avx512), OpenBLAS core'
	[ "$(wc -l <"$T/out/compare.csv")" -eq 5 ]
	# every libsa speed is a positive number
	run awk -F, 'NR > 1 && !($5 > 0) { bad = 1 } END { exit bad }' "$T/out/compare.csv"
	assert_success
	run cat "$T/out/compare.md"
	assert_line --regexp '^\| tiny-q8_0 \| tg8 \|'
	# nothing left behind in the temporary directory
	run find "$T" -name 'sa-bench-compare.*'
	assert_output ''
}

@test "bench-compare with IK_LLAMA_CPP_DIR: its llama-bench in every repetition, its column and ratio" {
	mkdir -p "$T/ik/build/bin"
	# a stand-in that logs its arguments and reports 50 tok/s
	cat >"$T/ik/build/bin/llama-bench" <<-EOF
	#!/bin/sh
	echo "\$*" >>"$T/ik/args"
	printf '[\n  {\n    "avg_ts": 50.000000,\n    "stddev_ts": 0\n  }\n]\n'
	EOF
	chmod +x "$T/ik/build/bin/llama-bench"
	IK_LLAMA_CPP_DIR="$T/ik" run --separate-stderr sh scripts/bench-compare.sh --dry-run -o "$T/out"
	assert_success
	assert_line --regexp '^\| tiny-f16 \| pp32 \| [0-9]+ \| [0-9.]+ \| - \| - \| 50.0 \| [0-9.]+ \|'
	assert_line --regexp '^\| tiny-q8_0 \| tg8 \| [0-9]+ \| [0-9.]+ \| - \| - \| 50.0 \| [0-9.]+ \|'
	assert_output --partial "ik_llama.cpp: native build in $T/ik"
	# prefill of 32 tokens, and decode of 8 at depth 32, on each model
	run grep -c -- '-p 32 -n 0 -r 1' "$T/ik/args"
	assert_output 2
	run grep -c -- '-p 0 -n 0 -gp 32,8 -r 1' "$T/ik/args"
	assert_output 2
	# the ratio is libsa's rate over 50
	run awk -F, 'NR > 1 && ($7 != 50 || !($5 > 0)) { bad = 1 } END { exit bad }' "$T/out/compare.csv"
	assert_success
	IK_LLAMA_CPP_DIR="$T/none" run sh scripts/bench-compare.sh --dry-run
	assert_failure 66
}

@test "bench-compare, bench-icl: bad options exit 64" {
	run sh scripts/bench-compare.sh -r 0 --dry-run
	assert_failure 64
	run sh scripts/bench-compare.sh -s nosuchset
	assert_failure 64
	run sh scripts/bench-compare.sh --bogus
	assert_failure 64
	run sh scripts/bench-icl.sh -s nosuchset
	assert_failure 64
	run sh scripts/bench-icl.sh -q x --dry-run
	assert_failure 64
}

@test "bench-icl --dry-run: CSV per k, ICL until the context is full, deltas beyond; a plot" {
	run --separate-stderr sh scripts/bench-icl.sh --dry-run "$T/out"
	assert_success
	csv="$T/out/icl-tiny.csv"
	[ -f "$csv" ]
	run cut -d, -f1 "$csv"
	assert_output "$(printf 'k\n0\n1\n2\n4\n8\n16')"
	# ICL fits k = 0..4 in 128 tokens, then stops; deltas go on
	[ -n "$(field "$csv" icl_ms 4)" ]
	[ -z "$(field "$csv" icl_ms 5)" ]
	[ -n "$(field "$csv" delta_ms 6)" ]
	[ "$(field "$csv" segments 6)" -gt 1 ]
	# KV cache: ICL's grows with k, the delta's stays that of the query alone
	[ "$(field "$csv" icl_kv 1)" -eq "$(field "$csv" delta_kv 1)" ]
	[ "$(field "$csv" icl_kv 4)" -gt "$(field "$csv" icl_kv 2)" ]
	[ "$(field "$csv" delta_kv 6)" -eq "$(field "$csv" delta_kv 1)" ]
	# a merged delta costs F32 copies of the adapted matrices, side paths less
	[ "$(field "$csv" merged_bytes 1)" -gt "$(field "$csv" side_bytes 1)" ]
	if command -v gnuplot >/dev/null; then
		run od -An -c -N4 "$T/out/icl-cost.png"
		assert_output --partial 'P   N   G'
	fi
}

@test "bench-icl helper: -K caps k; every time is a positive number" {
	"$ROOT/tests/helpers/mkmodel" --dim 64 --ff 192 --ctx 128 -o "$T/m.gguf"
	run --separate-stderr "$ROOT/tests/helpers/bench-icl" -K 3 -q 1 -r 2 -t 1 "$T/m.gguf"
	assert_success
	echo "$output" >"$T/x.csv"
	run cut -d, -f1 "$T/x.csv"
	assert_output "$(printf 'k\n0\n1\n2')"
	run awk -F, 'NR > 1 && !($4 > 0 && $5 > 0 && $6 > 0 && $7 > 0 && $11 > 0) { bad = 1 } END { exit bad }' "$T/x.csv"
	assert_success
	run "$ROOT/tests/helpers/bench-icl" -q 0 "$T/m.gguf"
	assert_failure 64
	run "$ROOT/tests/helpers/bench-icl" -T "$T/nosuchtask" "$T/m.gguf"
	assert_failure 66
}

@test "bench-serve --dry-run: one process against one per task, the same answers, a CSV" {
	run --separate-stderr sh scripts/bench-serve.sh --dry-run "$T/out"
	assert_success
	[ "$(wc -l <"$T/out/serve-tiny.csv")" -eq 5 ]
	for r in parallel-1 parallel-4 parallel-8 per-task; do
		# 2 tasks of 3 queries of 4 tokens each
		[ "$(awk -F, -v r=$r '$2 == r { print $4 }' "$T/out/serve-tiny.csv")" = 24 ]
	done
	run sh scripts/bench-serve.sh -s nope
	assert_failure 64
	run find "$T" -name 'sa-bench-serve.*'
	assert_output ''
}

@test "the bench scripts check their arguments and the tree through one sourced fragment (bench-common.sh)" {
	for s in bench-compare bench-icl bench-serve; do
		grep -q '^\. "$(dirname "$0")/bench-common.sh"$' "scripts/$s.sh"
		run sh "scripts/$s.sh" -s 'x y'
		assert_failure 64
		assert_output "$s: -s: unknown set 'x' ($(grep -q compare <<<$s && echo 'default, f16, q8_0, q4_k_m, q6_k' || echo 'default, tinyllama'))"
		run sh "scripts/$s.sh" -h
		assert_success
		assert_line --index 0 --partial "$s.sh - "
	done
	run grep -l 'run from the top of the sa tree\|missing: make\|unknown set' scripts/*.sh
	assert_output scripts/bench-common.sh
}
