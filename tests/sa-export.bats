#!/usr/bin/env bats
# sa-export: deltas as llama.cpp LoRA GGUF and PEFT adapters.  The unit
# program checks the update, shapes, safetensors layout and q/k row order;
# the references of scripts/oracle/make-lora-refs.sh check that llama.cpp
# with the exported LoRA generates what sa-run -d generates (live as well
# when LLAMA_CPP_DIR points to a built llama.cpp).

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	for arch in llama qwen2; do
		"$ROOT/tests/helpers/mkmodel" --arch $arch --seed 9 --heads 4 --kv-heads 2 -o "$D/$arch.gguf"
		"$ROOT/bin/sa-init" -m "$D/$arch.gguf" -r 4 -C 8 --mats all --seed 1 --w1-scale 0.5 \
		    -o "$D/$arch.adapter.gguf"
		for x in a b; do
			"$ROOT/bin/sa-encode" -q -m "$D/$arch.gguf" -a "$D/$arch.adapter.gguf" \
			    -o "$D/$arch.$x.delta" "$ROOT/tests/data/oracle/lora/demos-$x.tsv"
		done
	done
	"$ROOT/bin/sa-init" -m "$D/llama.gguf" -r 4 -C 8 --seed 2 -o "$D/other.adapter.gguf"
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	EXPORT="$ROOT/bin/sa-export"
	RUN="$ROOT/bin/sa-run"
	D="$BATS_FILE_TMPDIR"
	T="$BATS_TEST_TMPDIR"
	REFS="$ROOT/tests/data/oracle/lora"
}

hex() {
	od -An -tx1 | tr -d ' \n'
}

@test "export unit tests, llama: exact update, shapes, safetensors, q/k row order, logits" {
	run "$ROOT/tests/unit/test_export" "$D/llama.gguf" "$D/llama.adapter.gguf" \
	    "$D/llama.a.delta" "$D/llama.b.delta" "$T"
	assert_success
	assert_output --partial ", 0 failed"
}

@test "export unit tests, qwen2: no row permutation, same checks" {
	run "$ROOT/tests/unit/test_export" "$D/qwen2.gguf" "$D/qwen2.adapter.gguf" \
	    "$D/qwen2.a.delta" "$D/qwen2.b.delta" "$T"
	assert_success
	assert_output --partial ", 0 failed"
}

@test "--help and --version print to stdout and exit 0" {
	run --separate-stderr "$EXPORT" --help
	assert_success
	assert_output --partial "usage: sa-export"
	assert_output --partial "--format"
	[ -z "$stderr" ]
	run --separate-stderr "$EXPORT" --version
	assert_success
	assert_output --regexp '^sa-export [0-9]+\.[0-9]+\.[0-9]+$'
}

@test "usage errors exit 64" {
	mkdir -p "$T/inst/bin"
	cp "$EXPORT" "$T/inst/bin/"
	SA_MODEL= run -64 --separate-stderr "$T/inst/bin/sa-export" "$D/llama.a.delta"
	[[ "$stderr" == *"no model: give -m MODEL or set SA_MODEL"* ]]
	run -64 "$EXPORT" -m "$D/llama.gguf"
	assert_output --partial "no delta"
	run -64 "$EXPORT" -m "$D/llama.gguf" -F onnx "$D/llama.a.delta"
	assert_output --partial "unknown format 'onnx'"
	run -64 "$EXPORT" -m "$D/llama.gguf" -F peft "$D/llama.a.delta"
	assert_output --partial "directory"
	run -64 "$EXPORT" -m "$D/llama.gguf" -F peft -o - "$D/llama.a.delta"
	run -64 "$EXPORT" -m "$D/llama.gguf" -f peft -o "$T/p" "$D/llama.a.delta"
	assert_output --partial "sa-export: -f peft: the format option is -F (--format); did you mean -F peft?"
	[ ! -e "$T/p" ]
	run -64 "$EXPORT" -m "$D/llama.gguf" --base-model x -o "$T/x.gguf" "$D/llama.a.delta"
	run -64 "$EXPORT" -m "$D/llama.gguf" -o "$T/x.gguf" - - < /dev/null
	assert_output --partial "more than once"
}

@test "DELTA:SCALE: a scale that is not a finite float is a usage error; a file that exists wins" {
	for s in 1e40 -1e39 nan inf; do
		run -64 "$EXPORT" -m "$D/llama.gguf" -o "$T/x.gguf" "$D/llama.a.delta:$s"
		assert_output "sa-export: scale $s in '$D/llama.a.delta:$s' is not a finite float"
	done
	cp "$D/llama.a.delta" "$T/a:2"
	"$EXPORT" -m "$D/llama.gguf" -o "$T/one.gguf" "$D/llama.a.delta"
	"$EXPORT" -m "$D/llama.gguf" -o "$T/named.gguf" "$T/a:2"
	cmp "$T/one.gguf" "$T/named.gguf"
}

@test "the llama.cpp adapter: the model's architecture, lora type, one pair per adapted matrix" {
	"$EXPORT" -m "$D/qwen2.gguf" -o "$T/l.gguf" "$D/qwen2.a.delta"
	run "$ROOT/bin/sa-info" --json "$T/l.gguf"
	assert_success
	assert_output --partial '"kind":"lora adapter"'
	assert_output --partial '"architecture":"qwen2"'
	assert_output --partial '"adapter_type":"lora"'
	assert_output --partial '"lora_alpha":0'
	# 2 layers x 7 matrices x (lora_a, lora_b)
	assert_output --partial '"tensors":28'
}

@test "stdout, -o and '-' give the same bytes; the same input gives the same output" {
	"$EXPORT" -m "$D/llama.gguf" -o "$T/a.gguf" "$D/llama.a.delta:0.5" "$D/llama.b.delta"
	"$EXPORT" -m "$D/llama.gguf" "$D/llama.a.delta:0.5" "$D/llama.b.delta" > "$T/b.gguf"
	"$EXPORT" -m "$D/llama.gguf" -o "$T/c.gguf" -- -:0.5 "$D/llama.b.delta" < "$D/llama.a.delta"
	cmp "$T/a.gguf" "$T/b.gguf"
	cmp "$T/a.gguf" "$T/c.gguf"
	# and another scale is another adapter
	"$EXPORT" -m "$D/llama.gguf" -o "$T/d.gguf" "$D/llama.a.delta:0.25" "$D/llama.b.delta"
	! cmp -s "$T/a.gguf" "$T/d.gguf"
}

@test "the adapter a delta records is found without -a; a wrong one is refused with 65" {
	"$EXPORT" -m "$D/llama.gguf" -o "$T/a.gguf" "$D/llama.a.delta"
	"$EXPORT" -m "$D/llama.gguf" -a "$D/llama.adapter.gguf" -o "$T/b.gguf" "$D/llama.a.delta"
	cmp "$T/a.gguf" "$T/b.gguf"
	run -65 "$EXPORT" -m "$D/llama.gguf" -a "$D/other.adapter.gguf" -o "$T/c.gguf" "$D/llama.a.delta"
	assert_output --partial "another adapter"
	[ ! -e "$T/c.gguf" ]
	run -65 "$EXPORT" -m "$D/qwen2.gguf" -o "$T/c.gguf" "$D/llama.a.delta"
	run -65 "$EXPORT" -m "$D/llama.gguf" -o "$T/c.gguf" "$D/llama.a.delta" "$D/qwen2.a.delta"
	run -66 "$EXPORT" -m "$D/llama.gguf" -o "$T/c.gguf" "$T/missing.delta"
	assert_output --regexp '^sa-export: '
}

@test "PEFT directory: config and safetensors; replaced whole on a second export" {
	run "$EXPORT" -v -m "$D/llama.gguf" -F peft --base-model meta-llama/Llama-3.2-1B \
	    -o "$T/peft" "$D/llama.a.delta"
	assert_success
	assert_output --partial "PEFT"
	[ -f "$T/peft/adapter_config.json" ]
	[ -f "$T/peft/adapter_model.safetensors" ]
	grep -q '"peft_type": "LORA"' "$T/peft/adapter_config.json"
	grep -q '"base_model_name_or_path": "meta-llama/Llama-3.2-1B"' "$T/peft/adapter_config.json"
	grep -q '"target_modules": \["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"\]' \
	    "$T/peft/adapter_config.json"
	cp "$T/peft/adapter_model.safetensors" "$T/first"
	"$EXPORT" -m "$D/llama.gguf" -F peft -o "$T/peft/" "$D/llama.b.delta"
	! cmp -s "$T/first" "$T/peft/adapter_model.safetensors"
	# nothing but the adapter directory and the copy is left in $T
	run ls -A "$T"
	assert_output "$(printf 'first\npeft')"
}

# Make the model, adapter and deltas of a reference in $T; set -d arguments
# in DARGS and export arguments in XARGS.
build_ref() {
	local ref=$1 name file x
	field() { sed -n "s/^$1 //p" "$ref"; }
	"$ROOT/tests/helpers/mkmodel" $(field mkmodel) -o "$T/m.gguf"
	"$ROOT/bin/sa-init" -m "$T/m.gguf" $(field init) -o "$T/a.gguf"
	while read -r name file; do
		"$ROOT/bin/sa-encode" -q -m "$T/m.gguf" -a "$T/a.gguf" -o "$T/$name.delta" "$ROOT/$file"
	done < <(field delta)
	DARGS=() XARGS=()
	for x in $(field apply); do
		DARGS+=(-d "$T/${x%%:*}.delta:${x#*:}")
		XARGS+=("$T/${x%%:*}.delta:${x#*:}")
	done
	PROMPT=$(field prompt)
	N=$(field n)
}

# |a - b| <= tol
close() {
	awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t) }' ||
	    fail "$1 and $2 differ by more than $3"
}

@test "llama.cpp references: sa-run -d generates llama.cpp's continuation with the exported LoRA" {
	local refs=( "$REFS"/*.ref ) tol
	[ ${#refs[@]} -ge 3 ] || fail "expected at least 3 references in $REFS"
	for ref in "${refs[@]}"; do
		build_ref "$ref"
		want=$(sed -n 's/^text //p' "$ref")
		base=$(sed -n 's/^base-text //p' "$ref")
		[ -n "$want" ] && [ "$want" != "$base" ] || fail "$ref: no LoRA effect to compare"
		got=$("$RUN" -m "$T/m.gguf" "${DARGS[@]}" --temp 0 -n "$N" -p "$PROMPT" | hex)
		[ "$got" = "$want" ] || fail "$(basename "$ref"): sa-run gives $got, llama.cpp $want"
		got=$("$RUN" -m "$T/m.gguf" "${DARGS[@]}" --unmerged --temp 0 -n "$N" -p "$PROMPT" | hex)
		[ "$got" = "$want" ] || fail "$(basename "$ref"): sa-run --unmerged gives $got, llama.cpp $want"
		# without the deltas, the base continuation
		got=$("$RUN" -m "$T/m.gguf" --temp 0 -n "$N" -p "$PROMPT" | hex)
		[ "$got" = "$base" ] || fail "$(basename "$ref"): base model gives $got, llama.cpp $base"
		# F16 weights round the activations in llama.cpp: a looser bound
		case $ref in *-f16-*) tol=0.01;; *) tol=0.0005;; esac
		lp=$("$RUN" -m "$T/m.gguf" "${DARGS[@]}" --score --json -p "$PROMPT" |
		    sed 's/.*"logprob":\([^,]*\),.*/\1/')
		close "$lp" "$(sed -n 's/^logprob //p' "$ref")" $tol
	done
}

@test "llama.cpp references: a reference with one byte changed is caught" {
	local ref=$(ls "$REFS"/*.ref | head -n 1)
	build_ref "$ref"
	want=$(sed -n 's/^text //p' "$ref")
	bad=$(printf '%s' "$want" | sed 's/^\(..\)\(..\)/\1ff/')
	got=$("$RUN" -m "$T/m.gguf" "${DARGS[@]}" --temp 0 -n "$N" -p "$PROMPT" | hex)
	[ "$got" = "$want" ]
	[ "$got" != "$bad" ]
}

@test "llama.cpp live (LLAMA_CPP_DIR): the exported LoRA generates what sa-run -d generates" {
	[ -n "${LLAMA_CPP_DIR:-}" ] && [ -f "$LLAMA_CPP_DIR/build/bin/libllama.so" ] ||
	    skip "LLAMA_CPP_DIR is not a built llama.cpp"
	local lib=$LLAMA_CPP_DIR/build/bin portable=$LLAMA_CPP_DIR/build-portable/bin
	cc -std=c11 -D_GNU_SOURCE -O2 -I"$LLAMA_CPP_DIR/include" -I"$LLAMA_CPP_DIR/ggml/include" \
	    -o "$T/lora-greedy" "$ROOT/scripts/oracle/lora-greedy.c" \
	    -L"$lib" -lllama -lggml -lggml-base -Wl,-rpath,"$lib" -lm
	[ -f "$portable/libggml-cpu.so" ] && export LD_LIBRARY_PATH=$portable${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	for ref in "$REFS"/*-f32-*.ref; do
		build_ref "$ref"
		"$EXPORT" -m "$T/m.gguf" -a "$T/a.gguf" -o "$T/lora.gguf" "${XARGS[@]}"
		"$T/lora-greedy" -n "$N" -l "$T/lora.gguf" "$T/m.gguf" "$PROMPT" > "$T/out"
		want=$(sed -n 's/^text //p' "$T/out")
		got=$("$RUN" -m "$T/m.gguf" "${DARGS[@]}" --temp 0 -n "$N" -p "$PROMPT" | hex)
		[ "$got" = "$want" ] || fail "$(basename "$ref"): sa-run gives $got, llama.cpp $want"
		# llama.cpp's user scale multiplies as documented (alpha 0): scale 0 is the base
		"$T/lora-greedy" -n "$N" -s 0 -l "$T/lora.gguf" "$T/m.gguf" "$PROMPT" > "$T/out0"
		[ "$(sed -n 's/^text //p' "$T/out0")" = "$(sed -n 's/^base-text //p' "$ref")" ]
	done
}
