#!/usr/bin/env bats
# sa-init: new adapters bound to a model; options; W1 = 0 is a no-op and
# --w1-scale is not; determinism from the seed.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	"$ROOT/tests/helpers/mkmodel" --seed 8 --kv-heads 2 --ctx 64 -o "$BATS_FILE_TMPDIR/m.gguf"
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	INIT="$ROOT/bin/sa-init"
	INFO="$ROOT/bin/sa-info"
	GET="$ROOT/tests/helpers/jsonl-get"
	M="$BATS_FILE_TMPDIR/m.gguf"
	T="$BATS_TEST_TMPDIR"
	unset SA_MODEL SA_ADAPTER
}

@test "--help and --version print to stdout and exit 0" {
	run --separate-stderr "$INIT" --help
	assert_success
	assert_output --partial "usage: sa-init"
	assert_output --partial "--w1-scale"
	[ -z "$stderr" ]
	run --separate-stderr "$INIT" --version
	assert_success
	assert_output --regexp '^sa-init [0-9]+\.[0-9]+\.[0-9]+$'
}

@test "usage errors exit 64 and write nothing" {
	mkdir -p "$T/inst/bin"
	cp "$INIT" "$T/inst/bin/"
	run -64 --separate-stderr "$T/inst/bin/sa-init" -o "$T/a.gguf"
	[[ "$stderr" == *"no model: give -m MODEL or set SA_MODEL"* ]]
	[[ "$stderr" == *"usage: sa-init"* ]]
	run -64 "$INIT" -m "$M" -r 0 -o "$T/a.gguf"
	assert_output --partial "--rank: invalid value '0'"
	run -64 "$INIT" -m "$M" -C x -o "$T/a.gguf"
	assert_output --partial "--chunk: invalid value 'x'"
	run -64 "$INIT" -m "$M" --mats attn_q,attn_z -o "$T/a.gguf"
	assert_output --partial "unknown matrix 'attn_z'"
	run -64 "$INIT" -m "$M" --w1-scale nan -o "$T/a.gguf"
	run -64 "$INIT" -m "$M" extra -o "$T/a.gguf"
	assert_output --partial "unexpected argument 'extra'"
	[ ! -e "$T/a.gguf" ]
}

@test "the adapter is bound to the model and has the requested shape" {
	"$INIT" -m "$M" -r 5 -C 12 --mats attn_q,ffn_down -o "$T/a.gguf"
	run "$INFO" --json "$T/a.gguf"
	assert_success
	assert_output --partial '"kind":"adapter"'
	assert_output --partial '"rank":5,"chunk":12,"records":"packed","matrices":["attn_q","ffn_down"]'
	fp=$("$INFO" --json "$M" | "$GET" fingerprint)
	[ -n "$fp" ]
	assert_output --partial "\"model_fingerprint\":\"$fp\""
	"$INIT" -m "$M" --mats all -o "$T/all.gguf"
	run "$INFO" --json "$T/all.gguf"
	assert_output --partial '"rank":16,"chunk":64,"records":"packed","matrices":["attn_q","attn_k","attn_v","attn_output","ffn_gate","ffn_up","ffn_down"]'
}

@test "the same seed gives the same bytes, another seed another adapter" {
	"$INIT" -m "$M" --seed 4 -o "$T/1.gguf"
	"$INIT" -m "$M" --seed 4 >"$T/2.gguf"
	"$INIT" -m "$M" --seed 5 -o "$T/3.gguf"
	cmp "$T/1.gguf" "$T/2.gguf"
	! cmp -s "$T/1.gguf" "$T/3.gguf"
}

@test "W1 = 0 changes no score; --w1-scale does" {
	printf 'input\tlabel\nsunny\twarm\nsnow\tcold\n' >"$T/d.tsv"
	"$INIT" -m "$M" -r 4 -C 4 -o "$T/zero.gguf"
	"$INIT" -m "$M" -r 4 -C 4 --w1-scale 0.5 -o "$T/rand.gguf"
	"$ROOT/bin/sa-encode" -m "$M" -a "$T/zero.gguf" -o "$T/zero.delta" "$T/d.tsv"
	"$ROOT/bin/sa-encode" -m "$M" -a "$T/rand.gguf" -o "$T/rand.delta" "$T/d.tsv"
	base=$("$ROOT/bin/sa-run" -m "$M" --json --choice warm --choice cold -p 'rain ->')
	zero=$("$ROOT/bin/sa-run" -m "$M" -d "$T/zero.delta" --json --choice warm --choice cold -p 'rain ->')
	rand=$("$ROOT/bin/sa-run" -m "$M" -d "$T/rand.delta" --json --choice warm --choice cold -p 'rain ->')
	[ -n "$base" ]
	[ "$base" = "$zero" ]
	[ "$base" != "$rand" ]
}

@test "a missing or malformed model exits 66 or 65" {
	run -66 "$INIT" -m "$T/none.gguf" -o "$T/a.gguf"
	assert_output --partial "none.gguf"
	printf 'not a model' >"$T/bad.gguf"
	run -65 "$INIT" -m "$T/bad.gguf" -o "$T/a.gguf"
	assert_output --partial "bad.gguf"
	[ ! -e "$T/a.gguf" ]
}

@test "an unwritable output exits 73" {
	run -73 "$INIT" -m "$M" -o "$T/no/such/dir/a.gguf"
	assert_output --partial "a.gguf"
}
