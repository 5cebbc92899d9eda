#!/usr/bin/env bats
# sa-encode: deltas from demonstrations; exact no-op with W1 = 0; merged and
# side paths agree; --append equals a full encode; template rendering;
# segmenting; errors with file:line.  Also runs the encoder unit tests.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	"$ROOT/tests/helpers/mkmodel" --seed 5 --kv-heads 2 --ctx 64 -o "$D/m.gguf"
	"$ROOT/tests/helpers/mkmodel" --seed 6 --kv-heads 2 --ctx 64 -o "$D/other.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 4 -C 8 -o "$D/a0.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 4 -C 8 --seed 2 --w1-scale 0.5 -o "$D/a1.gguf"
	printf 'input\tlabel\ngreat film\tpos\ndull and slow\tneg\nfine acting\tpos\n' >"$D/a.tsv"
	printf 'input\tlabel\nbad plot\tneg\nlovely\tpos\n' >"$D/b.tsv"
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	ENC="$ROOT/bin/sa-encode"
	RUN="$ROOT/bin/sa-run"
	INFO="$ROOT/bin/sa-info"
	DIFF="$ROOT/tests/helpers/delta-diff"
	D="$BATS_FILE_TMPDIR"
	M="$D/m.gguf"
	T="$BATS_TEST_TMPDIR"
	unset SA_MODEL SA_ADAPTER
}

@test "encoder unit tests: mapping against a reference, forward hook, chain, append, determinism, demonstrations fed whole" {
	run "$ROOT/tests/unit/test_encode" "$M"
	assert_success
	assert_output --partial ", 0 failed"
}

@test "encoder unit tests with the portable kernels (SA_KERNELS=generic)" {
	SA_KERNELS=generic run "$ROOT/tests/unit/test_encode" "$M"
	assert_success
	assert_output --partial ", 0 failed"
}

@test "--help and --version print to stdout and exit 0" {
	run --separate-stderr "$ENC" --help
	assert_success
	assert_output --partial "usage: sa-encode"
	assert_output --partial "--append"
	[ -z "$stderr" ]
	run --separate-stderr "$ENC" --version
	assert_success
	assert_output --regexp '^sa-encode [0-9]+\.[0-9]+\.[0-9]+$'
}

@test "usage errors exit 64" {
	run -64 --separate-stderr "$ENC" --bogus
	[[ "$stderr" == *"usage: sa-encode"* ]]
	[ -z "$output" ]
	# no model, no adapter anywhere: a copy of the tool outside the source tree
	mkdir -p "$T/inst/bin"
	cp "$ENC" "$T/inst/bin/"
	run -64 "$T/inst/bin/sa-encode" -a "$D/a0.gguf" -o "$T/x" "$D/a.tsv"
	assert_output --partial "no model: give -m MODEL or set SA_MODEL"
	run -64 "$T/inst/bin/sa-encode" -m "$M" -o "$T/x" "$D/a.tsv"
	assert_output --partial "no adapter: give -a ADAPTER or set SA_ADAPTER"
	[ ! -e "$T/x" ]
	run -64 "$ENC" -m "$M" -a "$D/a0.gguf" -F csv "$D/a.tsv"
	assert_output --partial "unknown format 'csv'"
	# -f is sa-run's prompt file; the format's old letter says where it went
	run -64 --separate-stderr "$ENC" -m "$M" -a "$D/a0.gguf" -f tsv -o "$T/x" "$D/a.tsv"
	[[ "$stderr" == "sa-encode: -f tsv: the format option is -F (--format); did you mean -F tsv?"* ]]
	[ ! -e "$T/x" ]
	run -64 "$ENC" -m "$M" -a "$D/a0.gguf" --format csv "$D/a.tsv"
	assert_output --partial "unknown format 'csv'"
	run -64 "$ENC" -m "$M" -a "$D/a0.gguf" -T '{input' "$D/a.tsv"
	assert_output --partial "template: unclosed {"
	run -64 "$ENC" -m "$M" -a "$D/a0.gguf" -c 65 -o "$T/x" "$D/a.tsv"
	assert_output --partial "exceeds the model's context of 64"
	run -64 "$ENC" -m "$M" -a "$D/a0.gguf" - - </dev/null
	assert_output --partial "only once"
	[ ! -e "$T/x" ]
}

@test "an untrained adapter (W1 = 0) leaves scores exactly the base model's" {
	"$ENC" -m "$M" -a "$D/a0.gguf" -o "$T/d.delta" "$D/a.tsv" "$D/b.tsv"
	run "$INFO" --json "$T/d.delta"
	assert_output --partial '"n_demos":5'
	refute_output --partial '"h_norm":0,'
	base=$("$RUN" -m "$M" --choice pos --choice neg -p 'great film ->')
	with=$("$RUN" -m "$M" -d "$T/d.delta" --choice pos --choice neg -p 'great film ->')
	side=$("$RUN" -m "$M" -d "$T/d.delta" --unmerged --choice pos --choice neg -p 'great film ->')
	[ -n "$base" ]
	[ "$base" = "$with" ]
	[ "$base" = "$side" ]
	base=$("$RUN" -m "$M" --score -p 'dull and slow -> neg')
	with=$("$RUN" -m "$M" -d "$T/d.delta:3" --score -p 'dull and slow -> neg')
	[ "$base" = "$with" ]
}

@test "with a random W1, merged and side paths agree and differ from the base" {
	"$ENC" -m "$M" -a "$D/a1.gguf" -o "$T/d.delta" "$D/a.tsv"
	p='great film -> pos'
	base=$("$RUN" -m "$M" --score -p "$p" | awk '{print $2}')
	merged=$("$RUN" -m "$M" -d "$T/d.delta" --score -p "$p" | awk '{print $2}')
	side=$("$RUN" -m "$M" -d "$T/d.delta" --unmerged --score -p "$p" | awk '{print $2}')
	echo "base $base merged $merged side $side"
	awk -v a="$merged" -v b="$side" 'BEGIN { d = a - b; exit !(d < 1e-4 && d > -1e-4) }'
	awk -v a="$merged" -v b="$base" 'BEGIN { d = a - b; exit !(d > 1e-3 || d < -1e-3) }'
}

@test "the delta records fingerprints, the adapter's absolute path, counts, sources and parameters" {
	cd "$D"
	"$ENC" -m m.gguf -a a1.gguf -T '{input}={label};' -o "$T/d.delta" a.tsv
	run "$INFO" --json "$T/d.delta"
	assert_success
	assert_output --partial "\"adapter\":\"$D/a1.gguf\""
	assert_output --partial '"n_demos":3'
	assert_output --partial '"name":"a.tsv"'
	assert_output --partial 'format=tsv context=64 template=\"{input}={label};\"'
	model_fp=$("$INFO" --json m.gguf | "$ROOT/tests/helpers/jsonl-get" fingerprint)
	[ -n "$model_fp" ]
	assert_output --partial "\"model_fingerprint\":\"$model_fp\""
	# The content hash follows the bytes, not the name.
	cp a.tsv "$T/a.tsv"
	printf 'x\ty\n' >>"$T/a.tsv"
	"$ENC" -m m.gguf -a a1.gguf -T '{input}={label};' -o "$T/e.delta" "$T/a.tsv"
	h1=$("$INFO" --json "$T/d.delta" | grep -o '"hash":"[0-9a-f]*"')
	h2=$("$INFO" --json "$T/e.delta" | grep -o '"hash":"[0-9a-f]*"')
	[ -n "$h1" ] && [ "$h1" != "$h2" ]
}

@test "encoding is deterministic: the same inputs give the same bytes" {
	"$ENC" -m "$M" -a "$D/a1.gguf" -o "$T/1.delta" "$D/a.tsv" "$D/b.tsv"
	"$ENC" -m "$M" -a "$D/a1.gguf" -o "$T/2.delta" "$D/a.tsv" "$D/b.tsv"
	cmp "$T/1.delta" "$T/2.delta"
	"$ENC" -m "$M" -a "$D/a1.gguf" -o "$T/3.delta" "$D/b.tsv" "$D/a.tsv"
	! cmp -s "$T/1.delta" "$T/3.delta"
}

@test "any number of threads gives the same bytes (-t 1, 2, 3, 4, 7)" {
	# segments of up to 256 tokens on a model 128 wide: products large
	# enough for sgemm to be cut in blocks, attention through sgemm
	"$ROOT/tests/helpers/mkmodel" --seed 7 --dim 128 --kv-heads 2 --ctx 256 -o "$T/t.gguf"
	"$ROOT/bin/sa-init" -m "$T/t.gguf" -r 4 -C 8 --seed 2 --w1-scale 0.5 -o "$T/a.gguf"
	awk 'BEGIN { print "input\tlabel"; for (i = 1; i <= 60; i++)
		printf "record %d says %s\t%s\n", i, (i % 3 ? "yes" : "no"), (i % 2 ? "odd" : "even") }' \
	    >"$T/t.tsv"
	for t in 1 2 3 4 7; do
		"$ENC" -q -t $t -m "$T/t.gguf" -a "$T/a.gguf" -o "$T/$t.delta" "$T/t.tsv"
	done
	for t in 2 3 4 7; do
		cmp "$T/1.delta" "$T/$t.delta"
	done
}

@test "--append OLD equals encoding everything at once" {
	"$ENC" -m "$M" -a "$D/a1.gguf" -o "$T/all.delta" "$D/a.tsv" "$D/b.tsv"
	"$ENC" -m "$M" -a "$D/a1.gguf" -o "$T/a.delta" "$D/a.tsv"
	"$ENC" -m "$M" -a "$D/a1.gguf" --append "$T/a.delta" -o "$T/ab.delta" "$D/b.tsv"
	run "$DIFF" -t 1e-5 "$T/all.delta" "$T/ab.delta"
	assert_success
	# The comparison can fail: the first delta alone is not the whole.
	run "$DIFF" -t 1e-5 "$T/all.delta" "$T/a.delta"
	assert_failure 1
	# sa-info agrees on everything but the state's last bits.
	diff <("$INFO" --json "$T/all.delta" | sed 's/"h_norm":[^,]*,"p_mean":[^,]*,//; s/"file":"[^"]*"//') \
	    <("$INFO" --json "$T/ab.delta" | sed 's/"h_norm":[^,]*,"p_mean":[^,]*,//; s/"file":"[^"]*"//')
	# Standard input works for OLD.
	"$ENC" -m "$M" -a "$D/a1.gguf" --append - -o "$T/ab2.delta" "$D/b.tsv" <"$T/a.delta"
	cmp "$T/ab.delta" "$T/ab2.delta"
}

@test "--append refuses a delta of another adapter or model" {
	"$ROOT/bin/sa-init" -m "$D/other.gguf" -r 4 -C 8 -o "$T/ao.gguf"
	"$ENC" -m "$D/other.gguf" -a "$T/ao.gguf" -o "$T/o.delta" "$D/a.tsv"
	"$ENC" -m "$M" -a "$D/a0.gguf" -o "$T/a0.delta" "$D/a.tsv"
	run -65 "$ENC" -m "$M" -a "$D/a1.gguf" --append "$T/a0.delta" -o "$T/x" "$D/b.tsv"
	assert_output --partial "a0.delta was made with another adapter"
	run -65 "$ENC" -m "$M" -a "$D/a1.gguf" --append "$T/o.delta" -o "$T/x" "$D/b.tsv"
	assert_output --partial "o.delta was made for another model"
	run -65 "$ENC" -m "$D/other.gguf" -a "$D/a1.gguf" -o "$T/x" "$D/b.tsv"
	assert_output --partial "another model"
	[ ! -e "$T/x" ]
}

@test "--dump renders TSV, JSON Lines and templates" {
	printf 'label\tinput\textra\r\nyes\tx\\ty\tz\n\nno\tsecond\n' >"$T/r.tsv"
	run --separate-stderr "$ENC" --dump "$T/r.tsv"
	assert_success
	assert_line -n 0 "{\"source\":\"$T/r.tsv\",\"line\":2,\"text\":\"x\\ty -> yes\\n\"}"
	assert_line -n 1 "{\"source\":\"$T/r.tsv\",\"line\":4,\"text\":\"second -> no\\n\"}"
	[ "${#lines[@]}" -eq 2 ]
	printf '{"q":"2+2","a":4,"ok":true}\n  \n{"a":"x\\u00e9","q":"w\\"hy"}\n' >"$T/r.jsonl"
	run "$ENC" --dump -T 'Q: {q}\nA: {a}\t\{{q}\}\\' "$T/r.jsonl"
	assert_success
	assert_line -n 0 "{\"source\":\"$T/r.jsonl\",\"line\":1,\"text\":\"Q: 2+2\\nA: 4\\t{2+2}\\\\\"}"
	assert_line -n 1 "{\"source\":\"$T/r.jsonl\",\"line\":3,\"text\":\"Q: w\\\"hy\\nA: xé\\t{w\\\"hy}\\\\\"}"
	# --format overrides the extension and the content.
	run "$ENC" --dump -F tsv - <"$T/r.tsv"
	assert_line -n 0 '{"source":"stdin","line":2,"text":"x\ty -> yes\n"}'
	run "$ENC" --dump -F text - <"$T/r.tsv"
	[ "${#lines[@]}" -eq 1 ]
	assert_output --partial '"line":1,"text":"label\tinput'
}

@test "formats: extensions in any case, the content where the name says nothing, stdin too" {
	cp "$D/a.tsv" "$T/A.TSV"
	cp "$D/a.tsv" "$T/noext"
	printf '{"input":"great film","label":"pos"}\n{"input":"dull","label":"neg"}\n' > "$T/q.json"
	cp "$T/q.json" "$T/Q.JSONL"
	cp "$T/q.json" "$T/q.data"
	run --separate-stderr "$ENC" --dump -F tsv "$D/a.tsv"
	tsv=$(echo "$output" | cut -d, -f2-)
	[ "${#lines[@]}" -eq 3 ]
	for f in "$T/A.TSV" "$T/noext" -; do
		run --separate-stderr "$ENC" --dump "$f" < "$D/a.tsv"
		assert_success
		assert_equal "$(echo "$output" | cut -d, -f2-)" "$tsv"
	done
	for f in "$T/q.json" "$T/Q.JSONL" "$T/q.data" -; do
		run --separate-stderr "$ENC" --dump "$f" < "$T/q.json"
		assert_success
		assert_line -n 0 --partial '"line":1,"text":"great film -> pos\n"}'
		assert_line -n 1 --partial '"line":2,"text":"dull -> neg\n"}'
	done
	# a header naming the template's fields decides, whatever the template
	printf 'q\ta\nwhy\tbecause\n' | "$ENC" --dump -T '{q}={a}' | grep -q '"text":"why=because"'
	# text: .txt whatever it holds, and what has neither tabs nor JSON
	cp "$D/a.tsv" "$T/noext.txt"
	run --separate-stderr "$ENC" --dump "$T/noext.txt"
	[ "${#lines[@]}" -eq 1 ]
	run --separate-stderr "$ENC" --dump - <<< 'plain words'
	assert_output '{"source":"stdin","line":1,"text":"plain words\n"}'
	# the encoding of what stdin was found to be
	"$ENC" -m "$M" -a "$D/a1.gguf" -o "$T/f.delta" -F jsonl - < "$T/q.json"
	"$ENC" -m "$M" -a "$D/a1.gguf" -o "$T/s.delta" < "$T/q.json"
	"$DIFF" "$T/f.delta" "$T/s.delta"
	"$INFO" --json "$T/s.delta" | grep -q '"n_demos":2'
}

@test "formats: CSV, binary and what could be two formats are refused with 65, one line" {
	printf 'input,label\ngreat,pos\n' > "$T/a.csv"
	cp "$T/a.csv" "$T/A.CSV"
	run -65 --separate-stderr "$ENC" --dump "$T/A.CSV"
	run -65 --separate-stderr "$ENC" -m "$M" -a "$D/a0.gguf" -o "$T/x" "$T/a.csv"
	assert_equal "$stderr" "sa-encode: $T/a.csv: CSV is not read: convert it to TSV or JSON Lines, or give its format"
	[ ! -e "$T/x" ]
	# a line with tabs that names no template field: TSV with a bad header, or text?
	run -65 --separate-stderr "$ENC" --dump - <<< $'hello\tworld'
	assert_equal "$stderr" "sa-encode: stdin:1: cannot tell the format: a line with tabs but not a header naming 'input'; give its format (text, tsv or jsonl)"
	run -65 --separate-stderr "$ENC" --dump - <<< '{not json'
	[[ "$stderr" == "sa-encode: stdin:1: cannot tell the format: "*"not a JSON object"* ]]
	head -c 3000 "$M" > "$T/bin"
	run -65 --separate-stderr "$ENC" --dump "$T/bin"
	[[ "$stderr" == "sa-encode: $T/bin: not text"* ]]
	[ "${#stderr}" -lt 120 ]
	# the format given wins
	run --separate-stderr "$ENC" --dump -F text - <<< $'hello\tworld'
	assert_success
	run --separate-stderr "$ENC" --dump -F tsv "$T/a.csv"
	assert_failure 65
	[[ "$stderr" == *"a.csv:1: no field 'input'"* ]]
}

@test "no demonstrations (empty text, a header alone, blank JSON Lines) exits 65" {
	printf 'input\tlabel\n' > "$T/h.tsv"
	: > "$T/e.txt"
	printf '\n  \n' > "$T/e.jsonl"
	for f in h.tsv e.txt e.jsonl; do
		run -65 --separate-stderr "$ENC" -m "$M" -a "$D/a0.gguf" -o "$T/x" "$D/a.tsv" "$T/$f"
		[[ "$stderr" == "sa-encode: $T/$f: no demonstrations ("*")" ]]
		[ ! -e "$T/x" ]
		run -65 --separate-stderr "$ENC" --dump "$T/$f"
	done
	run -65 --separate-stderr "$ENC" -m "$M" -a "$D/a0.gguf" -o "$T/x" < /dev/null
	assert_equal "$stderr" "sa-encode: stdin: no demonstrations (empty text)"
	run -65 --separate-stderr "$ENC" -m "$M" -a "$D/a0.gguf" -o "$T/x" -F tsv - < "$T/h.tsv"
	assert_equal "$stderr" "sa-encode: stdin: no demonstrations (a header and no record)"
}

@test "a TSV header naming a column twice exits 65 naming it" {
	printf 'input\tlabel\tinput\nx\ty\tz\n' > "$T/d.tsv"
	run -65 --separate-stderr "$ENC" -m "$M" -a "$D/a0.gguf" -o "$T/x" "$T/d.tsv"
	assert_equal "$stderr" "sa-encode: $T/d.tsv:1: column 'input' appears twice in the header"
	# columns the template does not use, too
	printf 'input\tlabel\tnote\tnote\nx\ty\ta\tb\n' > "$T/n.tsv"
	run -65 --separate-stderr "$ENC" --dump "$T/n.tsv"
	[[ "$stderr" == *"column 'note' appears twice"* ]]
}

@test "a record missing a template field exits 65 naming file and line" {
	printf 'input\tlabel\nok\tpos\nno label here\n' >"$T/s.tsv"
	run -65 --separate-stderr "$ENC" -m "$M" -a "$D/a0.gguf" -o "$T/x" "$T/s.tsv"
	[ "$stderr" = "sa-encode: $T/s.tsv:3: missing field 'label'" ]
	printf 'input\n' >"$T/h.tsv"
	run -65 "$ENC" --dump "$T/h.tsv"
	assert_output --partial "h.tsv:1: no field 'label' in the header"
	printf '{"input":"a","label":"b"}\n{"input":"c"}\n' >"$T/s.jsonl"
	run -65 "$ENC" --dump "$T/s.jsonl"
	assert_output "sa-encode: $T/s.jsonl:2: missing field 'label'"
	printf '{"input":"a","label":"b"}\n{"input":"c",\n' >"$T/bad.jsonl"
	run -65 "$ENC" --dump "$T/bad.jsonl"
	assert_output --partial "bad.jsonl:2: column"
	printf '{"input":"a","label":null}\n' >"$T/null.jsonl"
	run -65 "$ENC" --dump "$T/null.jsonl"
	assert_output --partial "null.jsonl:1: field 'label' is not a string"
	printf 'input\tlabel\na\tb\tc\n' >"$T/wide.tsv"
	run -65 "$ENC" --dump "$T/wide.tsv"
	assert_output --partial "wide.tsv:2: more fields than the header's 2"
	[ ! -e "$T/x" ]
}

@test "a demonstration longer than a segment exits 65 naming file and line" {
	{ printf 'input\tlabel\nshort\tpos\n'; printf 'word%.0s ' $(seq 40); printf '\tneg\n'; } >"$T/l.tsv"
	run -65 --separate-stderr "$ENC" -m "$M" -a "$D/a0.gguf" -o "$T/x" "$T/l.tsv"
	[[ "$stderr" == "sa-encode: $T/l.tsv:3: demonstration of "*" tokens"*"exceeds the context of 64" ]]
	[ ! -e "$T/x" ]
	# With a smaller context even the short one does not fit.
	run -65 "$ENC" -m "$M" -a "$D/a0.gguf" -c 4 -o "$T/x" "$D/a.tsv"
	assert_output --partial "a.tsv:2: demonstration of"
}

@test "segments: records packed whole and in order, every file starts a segment, text cut at lines" {
	for i in $(seq 12); do printf 'item %d\tlab%d\n' $i $((i % 3)); done | sed '1i input\tlabel' >"$T/many.tsv"
	run --separate-stderr "$ENC" -m "$M" -a "$D/a0.gguf" -v -c 32 -o "$T/x" "$T/many.tsv" "$D/b.tsv"
	assert_success
	echo "$stderr"
	# Every segment fits; all 12 + 2 records are there; b.tsv starts anew.
	awk '/segment of/ { if ($5 > 32) bad = 1; n += $7 } END { exit bad || n != 14 }' <<<"$stderr"
	[ "$(grep -c 'many.tsv:.*segment of' <<<"$stderr")" -gt 2 ]
	grep -q "b.tsv:2: segment of" <<<"$stderr"
	# Lines of records start where the previous segment ended.
	lines=$(grep -o 'many.tsv:[0-9]*' <<<"$stderr" | cut -d: -f2 | tr '\n' ' ')
	[ "${lines%% *}" = 2 ]
	# Text: cut after a line end, except inside an over-long line.
	{ for i in $(seq 8); do echo "line number $i of the text"; done; printf 'x%.0s' $(seq 100); echo; } >"$T/t.txt"
	run --separate-stderr "$ENC" -m "$M" -a "$D/a0.gguf" -v -c 40 -o "$T/x" "$T/t.txt"
	assert_success
	echo "$stderr"
	awk '/segment of/ { if ($5 > 40 || $7 != 0) bad = 1 } END { exit bad }' <<<"$stderr"
	# A line is 22 tokens with BOS, two do not fit: one segment per line.
	for i in $(seq 8); do grep -q "t.txt:$i: segment of 2[0-9] tokens" <<<"$stderr"; done
	[ "$(grep -c 't.txt:9: segment' <<<"$stderr")" -ge 2 ]
}

@test "progress stays off when stderr is not a terminal; -q is silent" {
	run --separate-stderr "$ENC" -m "$M" -a "$D/a0.gguf" -o "$T/d.delta" "$D/a.tsv"
	assert_success
	[ -z "$stderr" ]
	[ -z "$output" ]
	run --separate-stderr "$ENC" -q -m "$M" -a "$D/a0.gguf" -o "$T/d.delta" "$D/a.tsv"
	[ -z "$stderr" ]
}

@test "missing inputs exit 66 and leave no output" {
	run -66 "$ENC" -m "$M" -a "$D/a0.gguf" -o "$T/x" "$T/nonexistent.tsv"
	assert_output --partial "nonexistent.tsv"
	run -66 "$ENC" -m "$T/nonexistent.gguf" -a "$D/a0.gguf" -o "$T/x" "$D/a.tsv"
	[ ! -e "$T/x" ]
	ls -A "$T" | { ! grep -q '^\.x\.'; }
}

@test "the delta goes to stdout by default and can be read from a pipe" {
	"$ENC" -m "$M" -a "$D/a1.gguf" <"$D/a.tsv" >"$T/s.delta"
	"$ENC" -m "$M" -a "$D/a1.gguf" -F tsv -o "$T/f.delta" - <"$D/a.tsv"
	run "$DIFF" "$T/s.delta" "$T/f.delta"
	assert_success
	run "$INFO" --json "$T/s.delta"
	assert_output --partial '"name":"stdin"'
	assert_output --partial '"n_demos":3'
}
