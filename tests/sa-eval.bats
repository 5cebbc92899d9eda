#!/usr/bin/env bats
# sa-eval: the results table on tiny tasks (rows, columns, determinism,
# ICL that does not fit), a zero adapter that changes nothing, a trained
# adapter that beats zero-shot, JSON Lines, text perplexities, random
# mappings and their plot, split files, bad inputs.  Also runs the
# evaluation unit tests (test_eval, test_evaluate).

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

# task DIR: train.tsv and test.tsv from "input<TAB>label" lines on stdin,
# the first TRAIN of them (default: all but the last 4) for train.
mktask() {
	mkdir -p "$1"
	local all n
	all=$(cat)
	n=$(printf '%s\n' "$all" | wc -l)
	{ printf 'input\tlabel\n'; printf '%s\n' "$all" | head -n $((n - 4)); } > "$1/train.tsv"
	{ printf 'input\tlabel\n'; printf '%s\n' "$all" | tail -n 4; } > "$1/test.tsv"
	cp "$1/test.tsv" "$1/dev.tsv"
}

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	"$ROOT/tests/helpers/mkmodel" --dim 64 --layers 2 --heads 4 --kv-heads 2 --ctx 128 -o "$D/m.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 4 -C 8 -o "$D/zero.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 4 -C 8 --w1-scale 0.5 -o "$D/rand.gguf"
	# a classification task (two labels) and a generation task (the word back)
	printf '%s\n' apple:red bread:blue chair:red door:blue eagle:red frost:blue \
	    grape:red hill:blue ice:red jar:blue kite:red lamp:blue |
	    tr : '\t' | mktask "$D/tasks/color"
	printf '%s\n' apple bread chair door eagle frost grape hill ice jar kite lamp |
	    awk '{ print $1 "\t" $1 }' | mktask "$D/tasks/echo"
	# demonstrations too long for 8 of them to fit a context of 128 tokens
	printf '%s\n' 'the cat sat on the mat:red' 'a dog ran to the house:blue' \
	    'the big red car went by:red' 'some blue birds sang:blue' \
	    'a small hill with trees:red' 'the door was open wide:blue' \
	    'we ate bread and jam:red' 'the lamp is on again:blue' \
	    'a kite flew up high:red' 'the ice was thin here:blue' |
	    tr : '\t' | mktask "$D/tasks/long"
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	EVAL="$ROOT/bin/sa-eval"
	GET="$ROOT/tests/helpers/jsonl-get"
	D="$BATS_FILE_TMPDIR"
	T="$BATS_TEST_TMPDIR"
	M="$D/m.gguf"
}

# The first table of the output (the cost table varies with the clock).
first_table() {
	awk '/^$/ { exit } { print }'
}

@test "evaluation unit tests: split files, tasks, prompts, cached scoring, decoding" {
	run "$ROOT/tests/unit/test_eval" "$M" "$T"
	assert_success
	assert_output --partial ", 0 failed"
}

@test "the protocol through its hooks: records, rows and means agree; bad inputs report nothing" {
	run "$ROOT/tests/unit/test_evaluate" "$M" "$T"
	assert_success
	assert_output --partial ", 0 failed"
}

@test "--help and --version print to stdout and exit 0" {
	run --separate-stderr "$EVAL" --help
	assert_success
	assert_output --partial "usage: sa-eval"
	assert_output --partial "--split-file"
	run --separate-stderr "$EVAL" --version
	assert_success
	assert_output --regexp '^sa-eval [0-9]'
}

@test "the table has a row per task, the seen and unseen means, and the cost table" {
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" -k 4 -t 1 -q --max-labels 4 \
	    --seen color --unseen echo --task "$D/tasks/color" "$D/tasks/echo/"
	assert_success
	assert_line --index 0 '| task | set | kind | queries | zero-shot | ICL k=4 | SA k=4 | SA K | K |'
	assert_line --index 1 '|---|---|---|---:|---:|---:|---:|---:|---:|'
	assert_line --index 2 --regexp '^\| color \| seen \| class \| 4 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9]+ \|$'
	assert_line --index 3 --regexp '^\| echo \| unseen \| gen \| 4 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9]+ \|$'
	assert_line --index 4 --regexp '^\| seen \(avg\) \| \| \| 1 tasks \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| \|$'
	assert_line --index 5 --regexp '^\| unseen \(avg\) \| \| \| 1 tasks \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| \|$'
	assert_line --index 6 --regexp '^\| method \| time/query \(ms\) \| KV cache/query \(KiB\) \|'
	assert_line --index 8 --regexp '^\| zero-shot \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| \|$'
	assert_line --index 9 --regexp '^\| ICL \(k=4\) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| \|$'
	assert_line --index 10 --regexp '^\| StreamAdapter \(k=4\) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$'
	assert_line --index 11 --regexp '^\| StreamAdapter \(K\) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$'
	[ "${#lines[@]}" -eq 12 ]
	# the seen mean is the one seen task's row
	seen=$(echo "$output" | awk -F'|' '/^\| color/ { print $6, $7, $8, $9 }')
	avg=$(echo "$output" | awk -F'|' '/^\| seen \(avg/ { print $6, $7, $8, $9 }')
	assert_equal "$avg" "$seen"
	# ICL holds k demonstrations: more KV cache per query than zero-shot and StreamAdapter
	zs=$(echo "$output" | awk -F'|' '/^\| zero-shot/ { print $4 }')
	icl=$(echo "$output" | awk -F'|' '/^\| ICL/ { print $4 }')
	sa=$(echo "$output" | awk -F'|' '/^\| StreamAdapter \(k/ { print $4 }')
	awk -v z="$zs" -v i="$icl" -v s="$sa" 'BEGIN { exit !(i > 2 * z && s == z) }'
}

@test "the same seed gives the same table, answers and all; another seed other demonstrations" {
	for r in 1a:1 1b:1 2:2; do
		"$EVAL" -m "$M" -a "$D/rand.gguf" -k 4 -t 1 -q -s ${r#*:} --jsonl "$T/q${r%:*}.jsonl" \
		    "$D/tasks/color" "$D/tasks/echo" | first_table > "$T/t${r%:*}"
	done
	cmp "$T/t1a" "$T/t1b"
	grep -q '^| color |' "$T/t1a"
	# everything but the times
	"$GET" task method k index gold prediction correct < "$T/q1a.jsonl" > "$T/a1"
	"$GET" task method k index gold prediction correct < "$T/q1b.jsonl" > "$T/a2"
	cmp "$T/a1" "$T/a2"
	# a delta of other demonstrations answers differently somewhere
	"$GET" method prediction < "$T/q2.jsonl" > "$T/b2"
	"$GET" method prediction < "$T/q1a.jsonl" > "$T/b1"
	run ! cmp -s "$T/b1" "$T/b2"
}

@test "ICL is n/a when k demonstrations do not fit the context; the deltas still run" {
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" -k 8 -t 1 -q \
	    --seen long,color "$D/tasks/long" "$D/tasks/color"
	assert_success
	# long holds 6 demonstrations, color 8: a column says which k each used
	assert_line --regexp '^\| long \| seen \| class \| 4 \| [0-9.]+ \| n/a \| [0-9.]+ \| [0-9.]+ \| 6 \| [0-9]+ \|$'
	assert_line --regexp '^\| color \| seen \| class \| 4 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| 8 \| [0-9]+ \|$'
	# the mean over seen tasks says ICL left one out
	assert_line --regexp '^\| seen \(avg\) \| \| \| 2 tasks \| [0-9.]+ \| [0-9.]+\* \|'
	assert_output --partial "mean over the tasks where the method applies"
	# with k = 1 it fits
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" -k 1 -t 1 -q "$D/tasks/long"
	assert_line --regexp '^\| long \| - \| class \| 4 \| [0-9.]+ \| [0-9.]+ \|'
}

@test "an adapter with W1 = 0 answers exactly as zero-shot, every query" {
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" -k 4 -t 1 -q --jsonl "$T/z.jsonl" \
	    "$D/tasks/color" "$D/tasks/echo" "$D/tasks/long"
	assert_success
	# per task: the zero-shot column equals both StreamAdapter columns
	echo "$output" | first_table | awk -F'|' 'NR > 2 { if ($6 != $8 || $6 != $9) bad = 1 } END { exit bad }'
	# and so does every answer
	"$GET" method task index prediction < "$T/z.jsonl" > "$T/z.tsv"
	awk -F'\t' '$1 == "zero-shot" { print $2, $3, $4 }' "$T/z.tsv" > "$T/zs"
	[ "$(wc -l < "$T/zs")" -eq 12 ]
	for m in sa sa-many; do
		awk -F'\t' -v m=$m '$1 == m { print $2, $3, $4 }' "$T/z.tsv" | diff "$T/zs" -
	done
	# and a random W1 does change answers
	"$EVAL" -m "$M" -a "$D/rand.gguf" -k 4 -t 1 -q --jsonl "$T/r.jsonl" \
	    "$D/tasks/color" "$D/tasks/echo" "$D/tasks/long" > /dev/null
	"$GET" method prediction < "$T/r.jsonl" > "$T/r.tsv"
	run ! diff <(awk -F'\t' '$1 == "zero-shot" { print $2 }' "$T/r.tsv") \
	    <(awk -F'\t' '$1 == "sa" { print $2 }' "$T/r.tsv")
}

@test "a trained copy adapter: the delta of demonstrations sharing a label beats zero-shot" {
	cd "$T"
	mkdir pool
	printf '%s\n' apple bread chair door eagle frost grape hill > pool/words.txt
	printf '%s\n' red big sun cat owl > pool/labels.txt
	"$ROOT/bin/sa-train" --adapter -m "$M" -o copy.gguf --pool pool --mix 0,0,1 \
	    --kmin 1 --kmax 1 --rank 8 --chunk 16 --steps 120 --batch-tokens 512 \
	    --eval-every 0 --lr 1e-2 --warmup 10 -t 1 -q
	# one task per label: every demonstration and every answer is that label
	for l in red big sun cat owl; do
		for w in apple bread chair door eagle frost grape hill; do printf '%s\t%s\n' $w $l; done |
		    mktask "copy/$l"
	done
	run --separate-stderr "$EVAL" -m "$M" -a copy.gguf -k 2 -t 1 -q --unseen red,big,sun,cat,owl copy/*/
	assert_success
	echo "$output"
	row=$(echo "$output" | grep '^| unseen (avg)')
	zs=$(echo "$row" | awk -F'|' '{ print $6 }')
	sa=$(echo "$row" | awk -F'|' '{ print $8 }')
	awk -v z="$zs" -v s="$sa" 'BEGIN { exit !(s >= z + 40) }'
}

@test "--jsonl: one valid JSON object per query and method, with the stated fields" {
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" -k 4 -K 6 -t 1 -q --jsonl "$T/q.jsonl" \
	    "$D/tasks/color" "$D/tasks/echo"
	assert_success
	table="$output"
	# 2 tasks x 4 queries x 4 methods
	[ "$(wc -l < "$T/q.jsonl")" -eq 32 ]
	run "$GET" task method k index gold prediction correct time kv_bytes < "$T/q.jsonl"
	assert_success
	# every field present, the first object as expected
	echo "$output" | awk -F'\t' 'NF != 9 { exit 1 } { for (i = 1; i <= NF; i++) if ($i == "-") exit 1 }'
	echo "${lines[0]}" | awk -F'\t' '{ exit !($1 == "color" && $2 == "zero-shot" && $3 == 0 && $4 == 0 && $5 == "red") }'
	echo "$output" | awk -F'\t' '{ n[$2]++; if ($7 != "true" && $7 != "false") bad = 1;
	    if (($7 == "true") != ($5 == $6)) bad = 1; if ($8 <= 0) bad = 1 }
	    END { exit bad || n["zero-shot"] != 8 || n["icl"] != 8 || n["sa"] != 8 || n["sa-many"] != 8 }'
	# k per method: 0, k, k, K
	echo "$output" | awk -F'\t' '($2 == "zero-shot" && $3 != 0) || ($2 == "icl" && $3 != 4) ||
	    ($2 == "sa" && $3 != 4) || ($2 == "sa-many" && $3 != 6) { bad = 1 } END { exit bad }'
	# the accuracy in the table is the share of correct answers
	acc=$(grep -c '"task":"color","method":"icl".*"correct":true' "$T/q.jsonl" || true)
	cell=$(echo "$table" | awk -F'|' '/^\| color/ { print $7 }')
	awk -v a="$acc" -v c="$cell" 'BEGIN { exit !(a * 25 == c) }'
}

@test "--text reports six perplexities per file" {
	awk 'BEGIN { srand(3); split("the cat sat on a mat and dog ran to big red house", w, " ");
	    for (i = 0; i < 60; i++) { s = w[int(rand() * 13) + 1];
	        for (j = 1; j < 8; j++) s = s " " w[int(rand() * 13) + 1]; print s } }' > "$T/text.txt"
	gzip -k "$T/text.txt"
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" --text "$T/text.txt" --text "$T/text.txt.gz" \
	    --segment 16 --many 6 --limit 5 -t 1 -q --jsonl "$T/t.jsonl"
	assert_success
	assert_line --index 0 '| text | passages | tokens | no context | previous in prompt | delta of previous | delta of 6 previous | itself in prompt | delta of itself |'
	assert_line --index 2 --regexp '^\| .*text.txt \| 5 \| 80 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$'
	# gzip or not, the same text
	a=$(echo "${lines[2]}" | cut -d'|' -f3-)
	b=$(echo "${lines[3]}" | cut -d'|' -f3-)
	assert_equal "$a" "$b"
	echo "${lines[2]}" | awk -F'|' '{ for (i = 5; i <= 10; i++) if (!($i > 1)) exit 1 }'
	# the prompt with the previous segment changes the perplexity, the
	# segment itself in the prompt changes it otherwise, a delta of itself too
	echo "${lines[2]}" | awk -F'|' '{ exit $5 == $6 || $9 == $6 || $10 == $5 }'
	assert_line --regexp '^\| delta of 6 previous \| [0-9.]+ \| [0-9.]+ \| 1.0 \| [0-9.]+ \|$'
	[ "$(wc -l < "$T/t.jsonl")" -eq 60 ]
	# the jsonl log-likelihoods give the table's perplexity
	ppl=$("$GET" text method logprob tokens < "$T/t.jsonl" | awk -F'\t' -v f="$T/text.txt" \
	    '$1 == f && $2 == "none" { s += $3; n += $4 } END { printf "%.3f", exp(-s / n) }')
	echo "${lines[2]}" | awk -F'|' -v p="$ppl" '{ exit !($5 == p) }'
	# --skip: passages further on, scored as the run from the start scored them
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" --text "$T/text.txt" \
	    --segment 16 --many 6 --skip 2 --limit 3 -t 1 -q --jsonl "$T/s.jsonl"
	assert_success
	assert_line --index 2 --regexp '^\| .*text.txt \| 3 \| 48 \| '
	run "$GET" index < "$T/s.jsonl"
	[ "$(printf '%s\n' "${lines[@]}" | sort -un | tr '\n' ' ')" = "8 9 10 " ]
	grep -F "\"text\":\"$T/text.txt\"" "$T/t.jsonl" | "$GET" method index logprob | awk '$2 >= 8' > "$T/from0"
	"$GET" method index logprob < "$T/s.jsonl" > "$T/skipped"
	[ "$(wc -l < "$T/skipped")" -eq 18 ]
	diff <(sort "$T/from0") <(sort "$T/skipped")
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" --text "$T/text.txt" --segment 16 --skip 1000
	assert_failure 65
	# a bad file, alone or among good ones: its one line, and no table begun
	assert_equal "$output" ""
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" --text "$T/text.txt" --text "$T/none.txt" \
	    --segment 16 --many 6 --limit 3 -t 1 -q
	assert_failure 66
	assert_equal "$output" ""
	assert_equal "$stderr" "sa-eval: $T/none.txt: No such file or directory"
	# two segments and BOS exceed the context: no prompt with the previous one
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" --text "$T/text.txt" --segment 64 --many 2 --limit 2 -t 1 -q
	assert_success
	assert_line --index 2 --regexp '^\| .* \| 2 \| 128 \| [0-9.]+ \| n/a \| [0-9.]+ \| [0-9.]+ \| n/a \| [0-9.]+ \|$'
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" --text "$T/text.txt" --segment 128
	assert_failure 64
}

@test "--map: recall of random mappings per number of pairs, one column per adapter, CSV and plot" {
	mkdir -p "$T/pool"
	printf '%s\n' apple bread chair door eagle frost grape hill ice jar kite lamp > "$T/pool/words.txt"
	printf '%s\n' red big sun cat owl > "$T/pool/labels.txt"
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" -a "$D/zero.gguf" --map --pool "$T/pool" \
	    --pairs 1,2,12 --episodes 2 -t 1 -q --csv "$T/map.csv" --jsonl "$T/map.jsonl"
	assert_success
	assert_line --index 0 '| pairs | records | tokens | queries | zero-shot | ICL | rand.gguf r=4 | zero.gguf r=4 |'
	assert_line --index 2 --regexp '^\| 1 \| 1 \| [0-9]+ \| 2 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$'
	# twelve pairs no longer fit a context of 128 tokens
	assert_line --index 4 --regexp '^\| 12 \| 12 \| [0-9]+ \| 24 \| [0-9.]+ \| n/a \| [0-9.]+ \| [0-9.]+ \|$'
	run cat "$T/map.csv"
	assert_line --index 0 'pairs,records,tokens,queries,zero-shot,ICL,rand.gguf r=4,zero.gguf r=4'
	assert_line --index 3 --regexp '^12,12,[0-9]+,24,[0-9.]+,,[0-9.]+,[0-9.]+$'
	# the zero adapter is zero-shot
	awk -F, 'NR > 1 && $5 != $8 { exit 1 }' "$T/map.csv"
	# (1 + 2 + 12) queries x 2 episodes x 3 methods, plus ICL where it fits
	[ "$(wc -l < "$T/map.jsonl")" -eq $(( (1 + 2 + 12) * 2 * 3 + (1 + 2) * 2 )) ]
	# ICL's prompt as one text: another ICL column, the same other columns
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" -a "$D/zero.gguf" --map --pool "$T/pool" \
	    --pairs 1,2,12 --episodes 2 -t 1 -q --csv "$T/text.csv" --icl-layout text
	assert_success
	cut -d, -f1-5,7- "$T/map.csv" > "$T/a"
	cut -d, -f1-5,7- "$T/text.csv" > "$T/b"
	cmp "$T/a" "$T/b"
	run -64 "$EVAL" -m "$M" -a "$D/rand.gguf" --map --pool "$T/pool" --icl-layout spaced
	# --queries: episodes enough for 5 queries a row, never fewer than --episodes;
	# the first two episodes are those drawn without it
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" --map --pool "$T/pool" \
	    --pairs 1,2,12 --episodes 2 --queries 5 -t 1 -q --jsonl "$T/q.jsonl"
	assert_success
	assert_line --index 2 --regexp '^\| 1 \| 1 \| [0-9]+ \| 5 \|'
	assert_line --index 3 --regexp '^\| 2 \| 2 \| [0-9]+ \| 6 \|'
	assert_line --index 4 --regexp '^\| 12 \| 12 \| [0-9]+ \| 24 \|'
	[ "$(grep -c '"pairs":1,"episode":4,' "$T/q.jsonl")" -eq 3 ]
	grep -v zero.gguf "$T/map.jsonl" | sed 's/,"time":[^,}]*//' > "$T/a"
	grep '"episode":[01],' "$T/q.jsonl" | sed 's/,"time":[^,}]*//' > "$T/b"
	cmp "$T/a" "$T/b"
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" --map --pool "$T/pool" --pairs 13
	assert_failure 64
	[[ "$stderr" == *"words.txt has 12"* ]]
	command -v gnuplot > /dev/null || skip "no gnuplot"
	gnuplot -e "csv='$T/map.csv'; png='$T/map.png'" "$ROOT/scripts/plot-map.gp"
	[ "$(head -c 4 "$T/map.png" | od -An -c | tr -d ' ')" = '211PNG' ]
}

@test "scripts/map-ci.py: recall with an interval over episodes, not over queries" {
	# two episodes of 4 queries: A right in one, wrong in the other; B always right
	for m in A B; do
		for e in 0 1; do
			for i in 0 1 2 3; do
				c=true
				[ "$m" = A ] && [ "$e" = 1 ] && c=false
				printf '{"pairs":4,"episode":%d,"method":"%s","index":%d,"correct":%s}\n' \
				    "$e" "$m" "$i" "$c"
			done
		done
	done > "$T/ci.jsonl"
	run --separate-stderr "$ROOT/scripts/map-ci.py" "$T/ci.jsonl"
	assert_success
	assert_line --index 0 '| pairs | A | B |'
	assert_line --index 2 '| 4 | 50.0 (0.0-100.0, 2 ep.) | 100.0 (100.0-100.0, 2 ep.) |'
	echo '{"task":"x"}' > "$T/none.jsonl"
	run --separate-stderr "$ROOT/scripts/map-ci.py" "$T/none.jsonl"
	assert_failure 65
	[[ "$stderr" == *"no --map records"* ]]
	printf '{"pairs":4,"episode":0}\nnot json\n' > "$T/bad.jsonl"
	run --separate-stderr "$ROOT/scripts/map-ci.py" "$T/bad.jsonl"
	assert_failure 65
	[ "$stderr" = "map-ci: $T/bad.jsonl:1: not a record of sa-eval --map --jsonl" ]
	printf '\377\376\n' > "$T/binary.jsonl"
	run --separate-stderr "$ROOT/scripts/map-ci.py" "$T/binary.jsonl"
	assert_failure 65
	[ "$stderr" = "map-ci: $T/binary.jsonl:1: not a record of sa-eval --map --jsonl" ]
	run --separate-stderr "$ROOT/scripts/map-ci.py" "$T/missing.jsonl"
	assert_failure 66
	[ "$(printf '%s\n' "$stderr" | wc -l)" -eq 1 ]
	run --separate-stderr "$ROOT/scripts/map-ci.py"
	assert_failure 64
}

@test "scripts/icl-probe.py: bad input is one line on stderr naming the file: 64 usage, 65 not text, not gzip or not a vocabulary, 66 unreadable" {
	PROBE="$ROOT/scripts/icl-probe.py"
	run --separate-stderr "$PROBE" --layout spaced
	assert_failure 64
	[ "$(printf '%s\n' "$stderr" | wc -l)" -eq 1 ]
	run --separate-stderr "$PROBE" --pool "$T/none"
	assert_failure 66
	[ "$stderr" = "icl-probe: $T/none/words.txt: No such file or directory" ]
	mkdir "$T/pool"
	printf '\377\376\n' > "$T/pool/words.txt"
	cp "$T/pool/words.txt" "$T/pool/labels.txt"
	run --separate-stderr "$PROBE" --pool "$T/pool"
	assert_failure 65
	[ "$stderr" = "icl-probe: $T/pool/words.txt: not UTF-8 text" ]
	printf 'apple\n' > "$T/pool/words.txt"
	printf 'a\n' > "$T/pool/labels.txt"
	printf 'plain\n' > "$T/plain.gz"
	run --separate-stderr "$PROBE" --pool "$T/pool" -n 1 --pad 10 --text "$T/plain.gz"
	assert_failure 65
	[ "$stderr" = "icl-probe: $T/plain.gz: not a whole gzip file" ]
	printf 'no tabs here\n' > "$T/vocab.tsv"
	run --separate-stderr "$PROBE" --pool "$T/pool" -n 1 --keys compound --vocab "$T/vocab.tsv"
	assert_failure 65
	[ "$stderr" = "icl-probe: $T/vocab.tsv: not a vocabulary of pieces (sa4k.tsv's columns)" ]
	run --separate-stderr "$PROBE" --pool "$T/pool" -n 2
	assert_failure 64
	[ "$stderr" = "icl-probe: 2 pairs, but only 1 keys" ]
}

@test "seen and unseen from split files: TSV, TSV with a header, Markdown with headings" {
	printf 'color\tseen\techo\n' > /dev/null
	printf '# split\ncolor\tseen\necho\tunseen\tgen\n' > "$T/split.tsv"
	printf 'kind\tname\n' > /dev/null
	printf 'task\tkind\tlabels\tsplit\ncolor\tclass\tred|blue\tunseen\necho\tgen\t\tseen\n' > "$T/TASKS.tsv"
	printf '# Tasks\n\n## Seen\n\n| task | kind |\n|---|---|\n| `echo` | gen |\n\n## Unseen tasks\n\n| task | kind |\n|---|---|\n| color | class: red, blue |\n' > "$T/split.md"
	for f in split.tsv TASKS.tsv split.md; do
		run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" -k 2 --limit 1 -t 1 -q \
		    --split-file "$T/$f" "$D/tasks/color" "$D/tasks/echo"
		assert_success
		case $f in
		split.tsv) assert_line --index 2 --partial '| color | seen | class |'
			assert_line --index 3 --partial '| echo | unseen | gen |' ;;
		*) assert_line --index 2 --partial '| color | unseen | class |'
			assert_line --index 3 --partial '| echo | seen | gen |' ;;
		esac
	done
	# the split file's kind wins over the count of labels
	printf 'color\tseen\tgen\n' > "$T/gen.tsv"
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" -k 2 --limit 1 -t 1 -q \
	    --split-file "$T/gen.tsv" "$D/tasks/color"
	assert_line --index 2 --partial '| color | seen | gen |'
	# TASKS.tsv beside the task directories is read by default; --seen overrides
	mkdir -p "$T/tasks"
	cp -r "$D/tasks/color" "$T/tasks/"
	cp "$T/TASKS.tsv" "$T/tasks/"
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" -k 2 --limit 1 -t 1 -q "$T/tasks/color"
	assert_line --index 2 --partial '| color | unseen | class |'
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" -k 2 --limit 1 -t 1 -q --seen color "$T/tasks/color"
	assert_line --index 2 --partial '| color | seen | class |'
	# a TSV line that says neither
	printf 'color\tmaybe\n' > "$T/bad.tsv"
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" --split-file "$T/bad.tsv" "$D/tasks/color"
	assert_failure 65
	[[ "$stderr" == *"bad.tsv:1:"* ]]
}

@test "bad inputs: missing task directory 66, TSV without the label column 65, usage 64" {
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" "$T/nope"
	assert_failure 66
	[[ "$stderr" =~ ^sa-eval:\ .*nope:\ No\ such\ file\ or\ directory$ ]]
	mkdir -p "$T/nolabel" "$T/notest"
	printf 'input\tanswer\nx\ty\n' > "$T/nolabel/train.tsv"
	cp "$T/nolabel/train.tsv" "$T/nolabel/test.tsv"
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" "$T/nolabel"
	assert_failure 65
	assert_equal "$stderr" "sa-eval: $T/nolabel/train.tsv:1: no column 'label' in the header (want input and label)"
	cp "$D/tasks/color/train.tsv" "$T/notest/"
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" "$T/notest"
	assert_failure 66
	[[ "$stderr" == *"notest/test.tsv"* ]]
	printf 'input\tlabel\nx\n' > "$T/nolabel/test.tsv"
	cp "$D/tasks/color/train.tsv" "$T/nolabel/"
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" "$T/nolabel"
	assert_failure 65
	[[ "$stderr" == *"test.tsv:2: missing field 'label'"* ]]
	# a bad task fails before any query runs: no table
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" "$D/tasks/color" "$T/nope"
	assert_failure 66
	assert_output ""
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" --seen colour "$D/tasks/color"
	assert_failure 64
	[[ "$stderr" == *"no --task named 'colour'"* ]]
	mkdir -p "$T/inst/bin"
	cp "$EVAL" "$T/inst/bin/"
	SA_ADAPTER= run -64 "$T/inst/bin/sa-eval" -m "$M" "$D/tasks/color"
	assert_output --partial "no adapter: give -a ADAPTER or set SA_ADAPTER"
	run -64 "$EVAL" -m "$M" -a "$D/zero.gguf"
	run -64 "$EVAL" -m "$M" -a "$D/zero.gguf" -a "$D/rand.gguf" "$D/tasks/color"
	run -64 "$EVAL" -m "$M" -a "$D/zero.gguf" -k 0 "$D/tasks/color"
	run -64 "$EVAL" -m "$M" -a "$D/zero.gguf" --split train "$D/tasks/color"
	run -64 "$EVAL" -m "$M" -a "$D/zero.gguf" --jsonl - "$D/tasks/color"
	run -64 "$EVAL" -m "$M" -a "$D/zero.gguf" --map "$D/tasks/color"
	run -64 "$EVAL" -m "$M" -a "$D/zero.gguf" --bogus
	# an adapter of another model
	"$ROOT/tests/helpers/mkmodel" --dim 64 --layers 2 --heads 4 --kv-heads 2 --ctx 64 --seed 9 -o "$T/other.gguf"
	run --separate-stderr "$EVAL" -m "$T/other.gguf" -a "$D/zero.gguf" "$D/tasks/color"
	assert_failure 65
	[[ "$stderr" == *"made for another model"* ]]
	# a jsonl that cannot be created
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" --jsonl "$T/no/such/dir/q.jsonl" "$D/tasks/color"
	assert_failure 73
}

@test "--rename: classification tasks answer with other label words, from the context only" {
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" --task "$D/tasks/color" --task "$D/tasks/echo" \
	    -k 4 -t 1 -q --jsonl "$T/plain.jsonl"
	assert_success
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" --task "$D/tasks/color" --task "$D/tasks/echo" \
	    -k 4 -t 1 -q --rename swap --jsonl "$T/swap.jsonl"
	assert_success
	# two classes trade their words; the generation task is as it was
	paste <("$GET" task method gold < "$T/plain.jsonl") <("$GET" task method gold < "$T/swap.jsonl") |
	    awk -F'\t' '$1 == "color" { n++; if ($3 == $6 || ($6 != "red" && $6 != "blue")) exit 1 }
	        $1 == "echo" && $3 != $6 { exit 1 } END { exit n == 0 }'
	mkdir -p "$T/pool"
	printf 'apple\nbread\ngreen\nstone\nriver\ncloud\n' > "$T/pool/labels.txt"
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" --task "$D/tasks/color" -k 4 -t 1 -q \
	    --rename pool --pool "$T/pool" --jsonl "$T/pool.jsonl"
	assert_success
	"$GET" gold prediction < "$T/pool.jsonl" | tr '\t' '\n' | sort -u > "$T/words"
	[ "$(grep -cvxF -f "$T/pool/labels.txt" "$T/words")" -eq 0 ]
	[ "$(sort -u "$T/words" | wc -l)" -eq 2 ]
	run -64 "$EVAL" -m "$M" -a "$D/zero.gguf" --task "$D/tasks/color" --rename pool
	run -64 "$EVAL" -m "$M" -a "$D/zero.gguf" --task "$D/tasks/color" --rename other
}

@test "--seen and --unseen naming one task is a usage error" {
	run -64 --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" --seen color,echo --unseen echo \
	    "$D/tasks/color" "$D/tasks/echo"
	[[ "$stderr" == "sa-eval: task 'echo' is in both --seen and --unseen"* ]]
	assert_output ""
}

@test "a split file that is not text: 65 and one short line, no bytes of it quoted" {
	run -65 --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" --split-file "$M" "$D/tasks/color"
	assert_equal "$stderr" "sa-eval: $M: not a text file"
	# a long bad value is quoted in part
	printf 'color\tseen\t%s\n' "$(printf 'classy%.0s' $(seq 20))" > "$T/long.tsv"
	run -65 --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" --split-file "$T/long.tsv" "$D/tasks/color"
	assert_equal "$stderr" "sa-eval: $T/long.tsv:1: kind 'classyclassyclassyclassy...' is neither class nor gen"
}

@test "the header shows the k used: the train split's size when smaller, per task when they differ" {
	# color has 8 train rows
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" -k 16 -t 1 -q --limit 1 "$D/tasks/color"
	assert_success
	assert_line --index 0 '| task | set | kind | queries | zero-shot | ICL k=8 | SA k=8 | SA K | K |'
	assert_line --regexp '^\| ICL \(k=8\) \|'
	# a task of 3 train rows beside it: a column of k per task
	printf '%s\n' a:red b:blue c:red d:blue e:red f:blue g:red | tr : '\t' | mktask "$T/tiny"
	run --separate-stderr "$EVAL" -m "$M" -a "$D/rand.gguf" -k 16 -t 1 -q --limit 1 \
	    --jsonl "$T/q.jsonl" "$D/tasks/color" "$T/tiny"
	assert_success
	assert_line --index 0 '| task | set | kind | queries | zero-shot | ICL k | SA k | SA K | k | K |'
	assert_line --index 1 '|---|---|---|---:|---:|---:|---:|---:|---:|---:|'
	assert_line --index 2 --regexp '^\| color \| - \| class \| 1 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| 8 \| 8 \|$'
	assert_line --index 3 --regexp '^\| tiny \| - \| class \| 1 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| 3 \| 3 \|$'
	assert_line --regexp '^\| all \(avg\) \| \| \| 2 tasks \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| \| \|$'
	assert_line --regexp '^\| ICL \(k\) \|'
	# the answers say the same k
	"$GET" task method k < "$T/q.jsonl" | grep -qx $'tiny\ticl\t3'
}

@test "classification labels come from TASKS.tsv when it lists them, a label absent from train included" {
	# train holds one long label; the test asks for a short one as well
	mkdir -p "$T/tasks/shade"
	printf 'input\tlabel\n' > "$T/tasks/shade/train.tsv"
	for w in apple bread chair door eagle frost; do
		printf '%s\tred red red red red red\n' $w >> "$T/tasks/shade/train.tsv"
	done
	printf 'input\tlabel\ngrape\tx\nhill\tred red red red red red\n' > "$T/tasks/shade/test.tsv"
	printf 'task\tsplit\tkind\tlabels\nshade\tunseen\tclass\tx|red red red red red red\n' > "$T/tasks/TASKS.tsv"
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" -k 2 -t 1 --jsonl "$T/q.jsonl" "$T/tasks/shade"
	assert_success
	assert_equal "$stderr" ""
	# the label train lacks is a candidate: the short one wins zero-shot
	"$GET" method index prediction < "$T/q.jsonl" | grep -qx $'zero-shot\t0\tx'
	# without a list, train's labels and a warning that one query cannot be right
	printf 'shade\tunseen\tclass\n' > "$T/split.tsv"
	run --separate-stderr "$EVAL" -m "$M" -a "$D/zero.gguf" -k 2 -t 1 --jsonl "$T/q.jsonl" \
	    --split-file "$T/split.tsv" "$T/tasks/shade"
	assert_success
	assert_equal "$stderr" "sa-eval: shade: 1 test query with a label train.tsv lacks: never answered right (a split file can list the labels)"
	run ! grep -q '"prediction":"x"' "$T/q.jsonl"
}
