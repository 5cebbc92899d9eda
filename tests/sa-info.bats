#!/usr/bin/env bats
# sa-info: deltas, adapters and models, as text and as JSON Lines; stdin;
# bad files.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	"$ROOT/tests/helpers/mkmodel" --seed 9 --kv-heads 2 --type f16 -o "$D/m.gguf"
	"$ROOT/tests/helpers/mkmodel" --seed 10 -o "$D/m2.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 3 -C 16 --mats attn_q,attn_v,ffn_down --seed 4 \
	    -o "$D/a.gguf"
	"$ROOT/tests/helpers/mkdelta" -a "$D/a.gguf" -s 5 --source "demo one.tsv" \
	    --tokens 123 --demos 7 --params 'template="{input}\n"' -o "$D/d.delta"
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	INFO="$ROOT/bin/sa-info"
	GET="$ROOT/tests/helpers/jsonl-get"
	D="$BATS_FILE_TMPDIR"
	T="$BATS_TEST_TMPDIR"
}

@test "--help and --version print to stdout and exit 0; bad options exit 64" {
	run --separate-stderr "$INFO" --help
	assert_success
	assert_output --partial "usage: sa-info"
	[ -z "$stderr" ]
	run --separate-stderr "$INFO" --version
	assert_output --regexp '^sa-info [0-9]+\.[0-9]+\.[0-9]+$'
	run -64 --separate-stderr "$INFO" --bogus "$D/d.delta"
	[[ "$stderr" == *"usage: sa-info"* ]]
	[ -z "$output" ]
	run -64 "$INFO" - - </dev/null
}

@test "a delta's header as aligned key: value lines" {
	run "$INFO" "$D/d.delta"
	assert_success
	assert_line "file:                $D/d.delta"
	assert_line "kind:                delta"
	assert_line "rank:                3"
	assert_line "chunk:               16"
	assert_line "matrices:            attn_q,attn_v,ffn_down"
	assert_line "n tokens:            123"
	assert_line "n demos:             7"
	assert_line 'params:              template="{input}\n"'
	assert_line --regexp '^source:              [0-9a-f]{16} demo one\.tsv$'
	# every line is "key:" padded to one column, then the value
	run grep -vcE '^[a-z A-Z]+: +[^ ]' <<<"$output"
	assert_output 0
}

@test "--json: one valid JSON object per line, fingerprints that tie the files together" {
	run --separate-stderr "$INFO" --json "$D/d.delta" "$D/a.gguf" "$D/m.gguf"
	assert_success
	[ "${#lines[@]}" -eq 3 ]
	json="$output"
	run "$GET" file kind rank n_tokens n_demos <<<"$json"
	assert_success
	assert_line --index 0 "$D/d.delta"$'\tdelta\t3\t123\t7'
	assert_line --index 1 --regexp $'/a\\.gguf\tadapter\t3\t-\t-$'
	assert_line --index 2 --regexp $'/m\\.gguf\tmodel\t-\t-\t-$'
	run "$GET" kind model_fingerprint adapter_fingerprint fingerprint <<<"$json"
	mfp=$(sed -n 3p <<<"$output" | cut -f4)
	afp=$(sed -n 2p <<<"$output" | cut -f4)
	[[ "$mfp" =~ ^[0-9a-f]{16}$ ]]
	# delta -> adapter -> model
	assert_line --index 0 $'delta\t'"$mfp"$'\t'"$afp"$'\t-'
	assert_line --index 1 $'adapter\t'"$mfp"$'\t-\t'"$afp"
	assert_line --index 2 $'model\t-\t-\t'"$mfp"
	run "$GET" sources <<<"$json"
	assert_line --index 0 --regexp '^\[\{"name":"demo one\.tsv","hash":"[0-9a-f]{16}"\}\]$'
}

@test "the text form's names are the --json keys, with spaces for underscores" {
	local f k p=()
	for f in "$D/d.delta" "$D/a.gguf" "$D/m.gguf"; do
		json=$("$INFO" -j "$f")
		# "source" lines are the members of "sources"
		for k in $("$INFO" "$f" | sed -n 's/^\([a-zA-Z ]*\):.*/\1/p' | grep -vx source | tr ' ' _); do
			[[ "$json" == *"\"$k\":"* ]] || p+=("$f: text '${k//_/ }' is no JSON key")
		done
	done
	printf '%s\n' "${p[@]}"
	[ "${#p[@]}" -eq 0 ]
	run "$INFO" "$D/d.delta" "$D/m.gguf"
	assert_line "n layer:             2"
	assert_line "n tokens:            123"
	assert_line "d model:             64"
}

@test "a model: hyperparameters, tensor count and types" {
	run "$INFO" -j "$D/m.gguf"
	run "$GET" kind architecture n_layer d_model n_head n_head_kv d_head tensors tensor_types <<<"$output"
	assert_output $'model\tllama\t2\t64\t4\t2\t16\t21\t{"F32":5,"F16":16}'
	run "$INFO" "$D/m.gguf"
	assert_line "kind:                model"
	assert_line "n head kv:           2"
	assert_line "tensor types:        F32 5, F16 16"
}

@test "an adapter: shapes, matrices, its base model" {
	run "$INFO" -j "$D/a.gguf"
	run "$GET" kind architecture base_model n_layer n_head_kv d_head rank chunk matrices tensors <<<"$output"
	assert_output $'adapter\tllama\tmkmodel-llama\t2\t2\t16\t3\t16\t["attn_q","attn_v","ffn_down"]\t30'
}

@test "stdin: a delta or a GGUF file, the same as from the file" {
	a=$("$INFO" -j "$D/d.delta" | "$GET" kind h_norm sources)
	b=$("$INFO" -j - <"$D/d.delta" | "$GET" kind h_norm sources)
	[ "$a" = "$b" ]
	run "$GET" file < <(cat "$D/d.delta" | "$INFO" -j)
	assert_output stdin
	a=$("$INFO" -j "$D/a.gguf" | "$GET" kind fingerprint)
	b=$(cat "$D/a.gguf" | "$INFO" -j | "$GET" kind fingerprint)
	[ "$a" = "$b" ]
	a=$("$INFO" -j "$D/m.gguf" | "$GET" fingerprint)
	b=$(cat "$D/m.gguf" | "$INFO" -j - | "$GET" fingerprint)
	[ "$a" = "$b" ]
}

@test "bad files: reported, the others still printed, status of the first failure" {
	echo "hello" >"$T/text"
	cp "$D/d.delta" "$T/bad.delta"
	printf '\xff' | dd of="$T/bad.delta" bs=1 seek=40 conv=notrunc status=none
	run -65 --separate-stderr "$INFO" -j "$T/text" "$D/d.delta" "$T/bad.delta" "$T/none"
	[ "${#lines[@]}" -eq 1 ]
	[[ "$stderr" == *"sa-info: $T/text: neither a delta nor a GGUF file"* ]]
	[[ "$stderr" == *"bad.delta: "* ]]
	[[ "$stderr" == *"none: No such file or directory"* ]]
	run -66 "$INFO" "$T/none" "$D/d.delta"
	run -65 "$INFO" - </dev/null
	assert_output --partial "stdin: neither a delta nor a GGUF file"
	# An adapter whose data was edited no longer matches its fingerprint.
	cp "$D/a.gguf" "$T/a.gguf"
	size=$(stat -c %s "$T/a.gguf")
	printf '\x7f' | dd of="$T/a.gguf" bs=1 seek=$((size - 2)) conv=notrunc status=none
	run -65 "$INFO" "$T/a.gguf"
	assert_output --partial "fingerprint mismatch"
}

@test "a model the engine refuses: nothing on stdout, the reason on stderr, 65" {
	cp "$D/m2.gguf" "$T/odd.gguf"
	# Rename the architecture key's value to one the engine does not know.
	off=$(LC_ALL=C grep -obUaF -m1 "llama" "$T/odd.gguf" | head -1 | cut -d: -f1)
	printf 'xxxxx' | dd of="$T/odd.gguf" bs=1 seek="$off" conv=notrunc status=none
	for j in "" -j; do
		run -65 --separate-stderr "$INFO" $j "$T/odd.gguf"
		assert_output ""
		[[ "$stderr" == "sa-info: $T/odd.gguf: unknown architecture 'xxxxx'"* ]]
	done
	# the others are still described
	run -65 --separate-stderr "$INFO" -j "$T/odd.gguf" "$D/m.gguf"
	[ "${#lines[@]}" -eq 1 ]
}

@test "a GGUF file without metadata: says so, nothing on stdout, 65" {
	# header: magic, version 3, no tensors, no keys
	printf 'GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00' > "$T/bare.gguf"
	run -65 --separate-stderr "$INFO" "$T/bare.gguf"
	assert_output ""
	assert_equal "$stderr" "sa-info: $T/bare.gguf: no metadata at all (0 keys): a model needs general.architecture, its hyperparameters and a tokenizer"
}

@test "a directory: 'Is a directory', 66, as the other tools say" {
	run -66 --separate-stderr "$INFO" "$T"
	assert_output ""
	assert_equal "$stderr" "sa-info: $T: Is a directory"
	run -66 --separate-stderr "$INFO" "$T" "$D/d.delta"
	[ "${#lines[@]}" -gt 1 ]
}
