#!/usr/bin/env bats
# The cache of encodings: sa-encode --cache-dir and SA_CACHE_DIR, sa-run
# --demos, and sa-cache list, prune and clear.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	"$ROOT/tests/helpers/mkmodel" --seed 5 --kv-heads 2 -o "$D/m.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 4 -C 8 --seed 1 --w1-scale 0.5 -o "$D/a.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 4 -C 8 --seed 2 --w1-scale 0.5 -o "$D/b.gguf"
	printf 'input\tlabel\ngreat film\tpos\ndull plot\tneg\nfine acting\tpos\n' > "$D/x.tsv"
	printf 'input\tlabel\ncold soup\tbad\nkind staff\tgood\n' > "$D/y.tsv"
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	ENC="$ROOT/bin/sa-encode"
	CACHE="$ROOT/bin/sa-cache"
	D="$BATS_FILE_TMPDIR"
	T="$BATS_TEST_TMPDIR"
	C="$T/cache"
	unset SA_CACHE_DIR
}

entries() {
	find "$C" -maxdepth 1 -name '*.delta' | wc -l
}

@test "a miss encodes and stores, a hit skips the encoding; both give the delta of a plain encode" {
	"$ENC" -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/plain.delta" "$D/x.tsv" "$D/y.tsv"
	run --separate-stderr "$ENC" -v --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" \
	    -o "$T/1.delta" "$D/x.tsv" "$D/y.tsv"
	assert_success
	[[ "$stderr" == *"cache miss"* ]]
	[[ "$stderr" == *"segment of"* ]]
	[ "$(entries)" -eq 1 ]
	run --separate-stderr "$ENC" -v --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" \
	    -o "$T/2.delta" "$D/x.tsv" "$D/y.tsv"
	assert_success
	[[ "$stderr" == *"cache hit: $C/"*".delta"* ]]
	[[ "$stderr" != *"segment of"* ]]
	[[ "$stderr" != *"tokens in"* ]]
	cmp "$T/plain.delta" "$T/1.delta"
	cmp "$T/plain.delta" "$T/2.delta"
}

@test "SA_CACHE_DIR turns the cache on; without either, nothing is stored" {
	SA_CACHE_DIR="$C" "$ENC" -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/1.delta" "$D/x.tsv"
	[ "$(entries)" -eq 1 ]
	run --separate-stderr env SA_CACHE_DIR="$C" "$ENC" -v -m "$D/m.gguf" -a "$D/a.gguf" \
	    -o "$T/2.delta" "$D/x.tsv"
	[[ "$stderr" == *"cache hit"* ]]
	HOME="$T/home" "$ENC" -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/3.delta" "$D/x.tsv"
	[ ! -e "$T/home" ]
}

@test "the key: bytes, template, context, format, adapter and order miss; names do not" {
	enc() { "$ENC" -v --cache-dir "$C" -m "$D/m.gguf" "$@" 2>&1 >/dev/null | grep -o 'cache [a-z]*'; }
	[ "$(enc -a "$D/a.gguf" -o "$T/o" "$D/x.tsv")" = "cache miss" ]
	[ "$(enc -a "$D/a.gguf" -o "$T/o" "$D/x.tsv")" = "cache hit" ]
	[ "$(enc -a "$D/a.gguf" -o "$T/o" -T '{input} => {label}\n' "$D/x.tsv")" = "cache miss" ]
	[ "$(enc -a "$D/a.gguf" -o "$T/o" -c 64 "$D/x.tsv")" = "cache miss" ]
	[ "$(enc -a "$D/a.gguf" -o "$T/o" -F text "$D/x.tsv")" = "cache miss" ]
	[ "$(enc -a "$D/b.gguf" -o "$T/o" "$D/x.tsv")" = "cache miss" ]
	[ "$(enc -a "$D/a.gguf" -o "$T/o" "$D/x.tsv" "$D/y.tsv")" = "cache miss" ]
	[ "$(enc -a "$D/a.gguf" -o "$T/o" "$D/y.tsv" "$D/x.tsv")" = "cache miss" ]
	sed 's/dull/flat/' "$D/x.tsv" > "$T/x2.tsv"
	[ "$(enc -a "$D/a.gguf" -o "$T/o" "$T/x2.tsv")" = "cache miss" ]
	# the same bytes under another name, and from stdin, hit: the sources
	# take the names of this run
	cp "$D/x.tsv" "$T/renamed.tsv"
	[ "$(enc -a "$D/a.gguf" -o "$T/hit.delta" "$T/renamed.tsv")" = "cache hit" ]
	"$ENC" -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/fresh.delta" "$T/renamed.tsv"
	cmp "$T/hit.delta" "$T/fresh.delta"
	[ "$(enc -a "$D/a.gguf" -F tsv -o "$T/stdin.delta" - < "$D/x.tsv")" = "cache hit" ]
	"$ENC" -m "$D/m.gguf" -a "$D/a.gguf" -F tsv -o "$T/fresh.delta" - < "$D/x.tsv"
	cmp "$T/stdin.delta" "$T/fresh.delta"
	"$ROOT/bin/sa-info" "$T/stdin.delta" | grep -q 'source:.* stdin$'
}

@test "--append bypasses the cache" {
	"$ENC" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/x.delta" "$D/x.tsv"
	run --separate-stderr "$ENC" -v --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" \
	    --append "$T/x.delta" -o "$T/xy.delta" "$D/y.tsv"
	assert_success
	[[ "$stderr" != *"cache"* ]]
	[ "$(entries)" -eq 1 ]
}

@test "concurrent encodes of one key end with one whole entry and no temporary files" {
	for i in 1 2 3 4 5 6; do
		"$ENC" -q --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/$i.delta" \
		    "$D/x.tsv" "$D/y.tsv" &
	done
	wait
	[ "$(entries)" -eq 1 ]
	[ -z "$(find "$C" -name '.*')" ]
	for i in 2 3 4 5 6; do
		cmp "$T/1.delta" "$T/$i.delta"
	done
	"$ROOT/bin/sa-info" "$C"/*.delta > /dev/null
	run --separate-stderr "$ENC" -v --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" \
	    -o "$T/7.delta" "$D/x.tsv" "$D/y.tsv"
	[[ "$stderr" == *"cache hit"* ]]
}

@test "concurrent encodes of one key: one encodes, the other waits for it and hits" {
	# The inputs are named pipes, which each process reads twice: for the
	# key, then to encode.  The second reading is held back until both have
	# looked the key up and missed, so without a lock both would encode.
	mkdir "$T/a" "$T/b"
	mkfifo "$T/a/x.tsv" "$T/b/x.tsv"
	"$ENC" -v --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/a.delta" \
	    "$T/a/x.tsv" 2> "$T/a.err" 3>&- &
	pa=$!
	"$ENC" -v --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/b.delta" \
	    "$T/b/x.tsv" 2> "$T/b.err" 3>&- &
	pb=$!
	cat "$D/x.tsv" > "$T/a/x.tsv"
	cat "$D/x.tsv" > "$T/b/x.tsv"
	for i in $(seq 300); do
		grep -q "cache miss" "$T/a.err" && grep -q "cache miss" "$T/b.err" && break
		sleep 0.1
	done
	# a writer whose reader hit the cache and left may fail on a closed
	# pipe: not the test's failure, so the writers run outside bats' shell,
	# whose error trap background jobs inherit
	sh -c 'exec cat "$1" > "$2"' sh "$D/x.tsv" "$T/a/x.tsv" 3>&- &
	wa=$!
	sh -c 'exec cat "$1" > "$2"' sh "$D/x.tsv" "$T/b/x.tsv" 3>&- &
	wb=$!
	wait $pa
	wait $pb
	# the writer to the pipe of the process that hit is still waiting for it
	kill $wa $wb 2> /dev/null || true
	wait $wa $wb || true
	cat "$T/a.err" "$T/b.err"
	[ "$(cat "$T/a.err" "$T/b.err" | grep -c 'tokens in')" -eq 1 ]
	[ "$(cat "$T/a.err" "$T/b.err" | grep -c 'cache hit')" -eq 1 ]
	[ "$(entries)" -eq 1 ]
	[ -z "$(find "$C" -name '.*')" ]
	# the same delta but for the name of its source
	[ "$("$ROOT/bin/sa-info" -j "$T/a.delta" | sed 's/"file":"[^"]*",//; s/"sources".*//')" = \
	  "$("$ROOT/bin/sa-info" -j "$T/b.delta" | sed 's/"file":"[^"]*",//; s/"sources".*//')" ]
}

@test "a damaged entry is reported, encoded again and replaced" {
	"$ENC" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/1.delta" "$D/x.tsv"
	entry=$(ls "$C"/*.delta)
	size=$(stat -c %s "$entry")
	# flip one byte in the middle of the state
	printf '\x55' | dd of="$entry" bs=1 seek=$((size / 2)) conv=notrunc status=none
	! cmp -s "$entry" "$T/1.delta"
	run --separate-stderr "$ENC" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" \
	    -o "$T/2.delta" "$D/x.tsv"
	assert_success
	[[ "$stderr" == "sa-encode: cache entry $entry"*"encoding again"* ]]
	cmp "$T/1.delta" "$T/2.delta"
	cmp "$T/1.delta" "$entry"
	# a truncated one too
	truncate -s 100 "$entry"
	run --separate-stderr "$ENC" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" \
	    -o "$T/3.delta" "$D/x.tsv"
	assert_success
	[[ "$stderr" == *"truncated"*"encoding again"* ]]
	cmp "$T/1.delta" "$entry"
}

@test "a cache that cannot be written is reported and the delta still written" {
	[ "$(id -u)" -ne 0 ] || skip "root writes anywhere"
	mkdir -p "$C" && chmod 555 "$C"
	run --separate-stderr "$ENC" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/1.delta" "$D/x.tsv"
	chmod 755 "$C"
	assert_success
	[[ "$stderr" == *"(not cached)"* ]]
	[ -s "$T/1.delta" ]
}

@test "a cache path that is a file: the delta is still written" {
	touch "$T/file"
	run --separate-stderr "$ENC" --cache-dir "$T/file" -m "$D/m.gguf" -a "$D/a.gguf" \
	    -o "$T/1.delta" "$D/x.tsv"
	assert_success
	[[ "$stderr" == *"(not cached)"* ]]
	[ -s "$T/1.delta" ]
}

@test "sa-run --demos: encodes through the cache, then applies: the same text as sa-encode + -d" {
	RUN="$ROOT/bin/sa-run"
	"$ENC" -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/x.delta" "$D/x.tsv"
	want=$("$RUN" -m "$D/m.gguf" -d "$T/x.delta" --temp 0 -n 12 -p 'fine acting ->')
	base=$("$RUN" -m "$D/m.gguf" --temp 0 -n 12 -p 'fine acting ->')
	[ "$want" != "$base" ]
	run --separate-stderr "$RUN" -v --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" \
	    --demos "$D/x.tsv" --temp 0 -n 12 -p 'fine acting ->'
	assert_success
	assert_output "$want"
	[[ "$stderr" == *"demonstrations: encoded"* ]]
	run --separate-stderr env SA_CACHE_DIR="$C" "$RUN" -v -m "$D/m.gguf" -a "$D/a.gguf" \
	    --demos "$D/x.tsv" --temp 0 -n 12 -p 'fine acting ->'
	assert_output "$want"
	[[ "$stderr" == *"demonstrations: cache hit"* ]]
	# sa-run's entry serves sa-encode, and the other way round
	run --separate-stderr "$ENC" -v --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" \
	    -o "$T/y.delta" "$D/x.tsv"
	[[ "$stderr" == *"cache hit"* ]]
	cmp "$T/x.delta" "$T/y.delta"
	# the default cache is under $HOME/.cache/sa
	HOME="$T/home" "$RUN" -m "$D/m.gguf" -a "$D/a.gguf" --demos "$D/x.tsv" --temp 0 -n 2 -p x
	[ "$(ls "$T/home/.cache/sa" | wc -l)" -eq 1 ]
}

@test "sa-run --demos with deltas: demonstrations encoded over the base model, all applied" {
	RUN="$ROOT/bin/sa-run"
	"$ENC" -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/x.delta" "$D/x.tsv"
	"$ENC" -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/y.delta" "$D/y.tsv"
	want=$("$RUN" -m "$D/m.gguf" -d "$T/x.delta" -d "$T/y.delta" --temp 0 -n 12 -p 'kind ->')
	run "$RUN" --cache-dir "$C" -m "$D/m.gguf" -d "$T/x.delta" --demos "$D/y.tsv" --temp 0 -n 12 -p 'kind ->'
	assert_success
	assert_output "$want"
}

@test "sa-run --demos: usage errors" {
	RUN="$ROOT/bin/sa-run"
	# no adapter anywhere: a copy of the tool outside the source tree
	mkdir -p "$T/inst/bin"
	cp "$RUN" "$T/inst/bin/"
	SA_ADAPTER= run -64 "$T/inst/bin/sa-run" -m "$D/m.gguf" --demos "$D/x.tsv" -p x
	assert_output --partial "no adapter: give -a ADAPTER or set SA_ADAPTER"
	# SA_ADAPTER is the adapter of --demos without -a
	want=$("$RUN" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" --demos "$D/x.tsv" --temp 0 -n 8 -p x)
	SA_ADAPTER="$D/a.gguf" run -0 "$RUN" --cache-dir "$C" -m "$D/m.gguf" --demos "$D/x.tsv" --temp 0 -n 8 -p x
	assert_output "$want"
	run -64 "$RUN" -m "$D/m.gguf" -a "$D/a.gguf" --demos - -p x -f -
	run -64 "$RUN" -m "$D/m.gguf" -a "$D/a.gguf" --demos - < /dev/null
	assert_output --partial "standard input"
	run -66 "$RUN" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" --demos "$T/missing.tsv" -p x
}

@test "sa-run --demos: TSV and JSON Lines from stdin, by content or --demos-format" {
	RUN="$ROOT/bin/sa-run"
	"$ENC" -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/x.delta" "$D/x.tsv"
	want=$("$RUN" -m "$D/m.gguf" -d "$T/x.delta" --temp 0 -n 12 -p 'fine acting ->')
	cp "$D/x.tsv" "$T/X.TSV"
	run --separate-stderr "$RUN" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" \
	    --demos "$T/X.TSV" --temp 0 -n 12 -p 'fine acting ->'
	assert_output "$want"
	for how in "" "--demos-format tsv"; do
		run --separate-stderr "$RUN" --cache-dir "$T/cache${how:+-forced}" -m "$D/m.gguf" -a "$D/a.gguf" \
		    --demos - $how --temp 0 -n 12 -p 'fine acting ->' < "$D/x.tsv"
		assert_success
		assert_output "$want"
	done
	# the same records as JSON Lines
	awk -F'\t' 'NR > 1 { printf "{\"input\":\"%s\",\"label\":\"%s\"}\n", $1, $2 }' "$D/x.tsv" > "$T/x.jsonl"
	run --separate-stderr "$RUN" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" \
	    --demos - --temp 0 -n 12 -p 'fine acting ->' < "$T/x.jsonl"
	assert_output "$want"
	# stdin read as text when told so: another delta
	run --separate-stderr "$RUN" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" \
	    --demos - --demos-format text --temp 0 -n 12 -p 'fine acting ->' < "$D/x.tsv"
	assert_success
	[ "$output" != "$want" ]
	run -64 --separate-stderr "$RUN" -m "$D/m.gguf" -a "$D/a.gguf" --demos - --demos-format csv -p x
	run -64 --separate-stderr "$RUN" -m "$D/m.gguf" --demos-format tsv -p x
	[[ "$stderr" == *"--demos-format goes with --demos"* ]]
}

@test "sa-run --demos: a file without demonstrations or in an unknown format exits 65" {
	RUN="$ROOT/bin/sa-run"
	printf 'input\tlabel\n' > "$T/h.tsv"
	run -65 --separate-stderr "$RUN" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" \
	    --demos "$T/h.tsv" --temp 0 -n 2 -p x
	assert_equal "$stderr" "sa-run: $T/h.tsv: no demonstrations (a header and no record)"
	run -65 --separate-stderr "$RUN" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" \
	    --demos - --temp 0 -n 2 -p x < /dev/null
	assert_equal "$stderr" "sa-run: stdin: no demonstrations (empty text)"
	printf 'input,label\n' > "$T/x.csv"
	run -65 --separate-stderr "$RUN" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" \
	    --demos "$T/x.csv" --temp 0 -n 2 -p x
	[[ "$stderr" == *"x.csv: CSV is not read"* ]]
	# nothing was cached
	[ ! -e "$C" ] || [ "$(entries)" -eq 0 ]
}

@test "sa-cache: --help, --version, usage errors" {
	run --separate-stderr "$CACHE" --help
	assert_success
	assert_output --partial "usage: sa-cache"
	run --separate-stderr "$CACHE" --version
	assert_output --regexp '^sa-cache [0-9]+\.[0-9]+\.[0-9]+$'
	run -64 "$CACHE"
	run -64 "$CACHE" frobnicate "$C"
	run -64 "$CACHE" list --max-age 3d "$C"
	run -64 "$CACHE" prune --max-age 3 "$C"
	assert_output --partial "--max-age"
	run -64 "$CACHE" prune --max-size 1Q "$C"
	run -64 "$CACHE" prune --cache-dir "$C" "$C"
	run -66 "$CACHE" list "$T/nowhere"
	# the default cache, not made yet, is empty
	run env HOME="$T/nohome" XDG_CACHE_HOME= "$CACHE" list
	assert_success
	assert_output ""
}

# Three entries used 40, 20 and 1 days ago, a stale and a fresh temporary
# file, and a file of someone else's.
fill_cache() {
	local i=0
	for f in "$D/x.tsv" "$D/y.tsv" "$T/z.tsv"; do
		[ -f "$f" ] || printf 'input\tlabel\nwarm\tpos\n' > "$f"
		"$ENC" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" -o /dev/null "$f"
	done
	set -- $(ls -t "$C"/*.delta)
	touch -d '1 day ago' "$1"
	touch -d '20 days ago' "$2"
	touch -d '40 days ago' "$3"
	OLD=$3 MID=$2 NEW=$1
	key=$(basename "$NEW" .delta)
	touch -d '2 hours ago' "$C/.$key.delta.AbC123"
	touch "$C/.$key.delta.XyZ789"
	touch -d '2 hours ago' "$C/.$key.lock"   # left by a process that died
	echo mine > "$C/notes.txt"
}

@test "sa-cache list: one line per entry, oldest use first; JSON Lines" {
	fill_cache
	run --separate-stderr "$CACHE" list "$C"
	assert_success
	[ "${#lines[@]}" -eq 3 ]
	[[ "${lines[0]}" == "$(basename "$OLD" .delta) "* ]]
	[[ "${lines[2]}" == "$(basename "$NEW" .delta) "* ]]
	run --separate-stderr "$CACHE" -v list -j "$C"
	[ "${#lines[@]}" -eq 3 ]
	for l in "${lines[@]}"; do
		[[ "$l" == '{"key":"'*'","bytes":'*'"tokens":'*'"ok":true}' ]]
	done
	[[ "$stderr" == *"3 entries"* ]]
}

@test "sa-cache prune --max-age drops entries unused that long, and dead temporary files" {
	fill_cache
	"$CACHE" prune --max-age 30d "$C"
	[ ! -e "$OLD" ] && [ -e "$MID" ] && [ -e "$NEW" ]
	[ ! -e "$C/.$key.delta.AbC123" ] && [ -e "$C/.$key.delta.XyZ789" ]
	[ ! -e "$C/.$key.lock" ]
	[ -e "$C/notes.txt" ]
	"$CACHE" prune --max-age 2w "$C"
	[ ! -e "$MID" ] && [ -e "$NEW" ]
}

@test "sa-cache prune --max-size drops the least recently used first; a hit counts as a use" {
	fill_cache
	size=$(stat -c %s "$C"/*.delta | sort -n | tail -n 1)
	# a hit makes the oldest entry the most recently used
	"$ENC" --cache-dir "$C" -m "$D/m.gguf" -a "$D/a.gguf" -o /dev/null "$D/x.tsv"
	[ "$OLD" -nt "$NEW" ]
	run "$CACHE" prune --dry-run --max-size "$size" "$C"
	assert_success
	assert_output --partial "$MID"
	assert_output --partial "$NEW"
	refute_output --partial "$OLD"
	[ "$(ls "$C"/*.delta | wc -l)" -eq 3 ]
	"$CACHE" prune --max-size "$size" "$C"
	[ "$(ls "$C"/*.delta)" = "$OLD" ]
	"$CACHE" prune --max-size 0 "$C"
	[ -z "$(ls "$C"/*.delta 2>/dev/null)" ]
	[ -e "$C/notes.txt" ]
}

@test "sa-cache clear drops every entry, temporary and lock file, nothing else" {
	fill_cache
	run "$CACHE" -v clear "$C"
	assert_success
	assert_output --partial "dropped 6 files"
	[ "$(ls -A "$C")" = "notes.txt" ]
	run "$CACHE" list "$C"
	assert_output ""
}

@test "the library's view of a cache: its own files, oldest use first; what prune and clear select" {
	run "$ROOT/tests/unit/test_cache" "$T/c"
	assert_success
	assert_output --partial " 0 failed"
}
