#!/usr/bin/env bats
# Faults: a full disk, a read-only directory, signals in the middle of a
# write, a reader that goes away, headers that would need absurd memory,
# non-finite numbers, and two writers of one file.  Each tool that writes
# must fail with its status and one clear line, leave the old file as it
# was, and leave no temporary file behind (doc/hardening.md).

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	"$ROOT/tests/helpers/mkmodel" --seed 3 --ctx 64 -o "$D/m.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 2 -C 8 -o "$D/a.gguf"
	printf 'input\tlabel\ncat\tcats\ndog\tdogs\nox\toxen\n' > "$D/d.tsv"
	mkdir "$D/task"
	for f in train dev test; do cp "$D/d.tsv" "$D/task/$f.tsv"; done
	"$ROOT/bin/sa-encode" -q -m "$D/m.gguf" -a "$D/a.gguf" -o "$D/d.delta" "$D/d.tsv"
	# A large state (15 MB): writing it takes long enough for a signal to
	# land in the middle.  Two medium ones (2 MB) of one shape, for two
	# writers at once.
	"$ROOT/tests/helpers/mkdelta" --layers 16 --kv-heads 8 --head-dim 64 --rank 64 \
	    --mats attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down -o "$D/big.delta"
	for s in 1 2; do
		"$ROOT/tests/helpers/mkdelta" --layers 4 --kv-heads 4 --head-dim 64 --rank 64 \
		    --mats attn_q,attn_k,attn_v,attn_output -s $s -o "$D/mid$s.delta"
	done
	# sa-train's smallest run (as in train.bats)
	awk 'BEGIN { srand(1); split("the cat sat on a mat and dog ran", w, " ");
		for (i = 0; i < 400; i++) { s = w[int(rand() * 10) + 1];
			for (j = 1; j < 10; j++) s = s " " w[int(rand() * 10) + 1]; print s } }' > "$D/text.txt"
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	T="$BATS_TEST_TMPDIR"
	F="$ROOT/tests/data/faults"
	TINY="--pretrain --vocab $D/m.gguf --text $D/text.txt --dim 32 --layers 1 --heads 2 --kv-heads 2 --ctx 32 --batch-tokens 256 --micro 4 --eval-every 0 -t 1 -q"
}

teardown() {
	# an immutable directory or a mount would outlive the test
	[ -d "$T/immutable" ] && chattr -i "$T/immutable" 2>/dev/null
	mountpoint -q "$T/romount" 2>/dev/null && umount "$T/romount"
	mountpoint -q "$T/small" 2>/dev/null && umount "$T/small"
	return 0
}

# The tools that write a file, each writing to $2.
write_with() {
	case $1 in
	encode) "$ROOT/bin/sa-encode" -q -m "$D/m.gguf" -a "$D/a.gguf" -o "$2" "$D/d.tsv" ;;
	merge) "$ROOT/bin/sa-merge" -q -o "$2" "$D/d.delta" ;;
	init) "$ROOT/bin/sa-init" -m "$D/m.gguf" -r 2 -C 8 -o "$2" ;;
	export) "$ROOT/bin/sa-export" -q -m "$D/m.gguf" -a "$D/a.gguf" -o "$2" "$D/d.delta" ;;
	train) "$ROOT/bin/sa-train" $TINY --steps 1 --ckpt "$T/ckpt" -o "$2" ;;
	eval) "$ROOT/bin/sa-eval" -q -m "$D/m.gguf" -a "$D/a.gguf" --task "$D/task" -k 1 -K 1 \
	    --limit 1 --jsonl "$2" > /dev/null ;;
	esac
}
WRITERS="encode merge init export train eval"

# The tools that write to stdout, each with a small job.
stdout_of() {
	case $1 in
	run) "$ROOT/bin/sa-run" -m "$D/m.gguf" -d "$D/d.delta" -p hi -n 4 --temp 0 ;;
	info) "$ROOT/bin/sa-info" "$D/m.gguf" "$D/a.gguf" "$D/d.delta" ;;
	encode) "$ROOT/bin/sa-encode" -q -m "$D/m.gguf" -a "$D/a.gguf" "$D/d.tsv" ;;
	dump) "$ROOT/bin/sa-encode" --dump "$D/d.tsv" ;;
	merge) "$ROOT/bin/sa-merge" -q "$D/d.delta" ;;
	init) "$ROOT/bin/sa-init" -m "$D/m.gguf" -r 2 -C 8 ;;
	export) "$ROOT/bin/sa-export" -q -m "$D/m.gguf" -a "$D/a.gguf" "$D/d.delta" ;;
	eval) "$ROOT/bin/sa-eval" -q -m "$D/m.gguf" -a "$D/a.gguf" --task "$D/task" -k 1 -K 1 --limit 1 ;;
	esac
}
STDOUT_TOOLS="run info encode dump merge init export eval"

built() {
	case $1 in dump) set -- encode ;; esac
	[ -x "$ROOT/bin/sa-$1" ]
}

# Temporary files sa_outfile leaves while writing: .NAME.XXXXXX
temps_in() {
	find "$1" -maxdepth 1 -name '.*.??????' -type f 2>/dev/null
}

# A shell without job control starts background commands with SIGINT
# ignored, and a tool keeps an ignored signal ignored (as nohup wants):
# give them the default back, as an interactive shell would.
bg_default() {
	exec env --default-signal=INT,TERM,HUP "$@"
}

@test "a full disk (/dev/full) is an I/O error: exit 74, one line naming the file" {
	for t in $WRITERS; do
		built $t || continue
		run -74 write_with $t /dev/full
		assert_output "sa-$t: /dev/full: No space left on device"
	done
	for t in $STDOUT_TOOLS; do
		built $t || continue
		run -74 bash -c "$(declare -f stdout_of); ROOT='$ROOT' D='$D' stdout_of $t > /dev/full"
		assert_output --regexp "^sa-[a-z]+: stdout: No space left on device$"
	done
}

@test "a file system that fills up: exit 74, the old file intact, no temporary" {
	[ "$(id -u)" -eq 0 ] || skip "mounting a small file system needs root"
	mkdir "$T/small"
	mount -t tmpfs -o size=64k tmpfs "$T/small" 2>/dev/null || skip "cannot mount a tmpfs here"
	for t in $WRITERS; do
		built $t || continue
		cp "$D/d.delta" "$T/small/out"
		# the rest of the space taken: the first block written fails
		head -c 100000 /dev/zero > "$T/small/filler" 2>/dev/null || true
		run -74 write_with $t "$T/small/out"
		assert_output --regexp "^sa-$t: .*small/out: No space left on device$"
		cmp "$D/d.delta" "$T/small/out"
		assert_equal "$(ls -A "$T/small" | sort | tr '\n' ' ')" "filler out "
		rm "$T/small/filler"
	done
	# and a disk that fills in the middle of a 2 MB delta
	run -74 "$ROOT/bin/sa-merge" -o "$T/small/out" "$D/mid1.delta"
	cmp "$D/d.delta" "$T/small/out"
	assert_equal "$(ls -A "$T/small")" "out"
}

@test "a read-only directory is 'cannot create' (73), and nothing appears in it" {
	local dirs=()
	# Root ignores permission bits: an immutable directory (chattr +i) and a
	# read-only bind mount refuse even root; a path under a regular file
	# works for anyone, anywhere.
	mkdir "$T/immutable"
	if chattr +i "$T/immutable" 2>/dev/null; then
		dirs+=("$T/immutable")
	fi
	mkdir "$T/romount"
	if [ "$(id -u)" -eq 0 ] && mount --bind -o ro "$T/romount" "$T/romount" 2>/dev/null &&
	    ! touch "$T/romount/probe" 2>/dev/null; then
		dirs+=("$T/romount")
	fi
	if [ "$(id -u)" -ne 0 ]; then
		mkdir "$T/readonly" && chmod a-w "$T/readonly" && dirs+=("$T/readonly")
	fi
	: > "$T/plainfile"
	dirs+=("$T/plainfile")
	for dir in "${dirs[@]}"; do
		for t in $WRITERS; do
			built $t || continue
			run -73 write_with $t "$dir/out"
			assert_output --regexp "^sa-$t: $dir/out: cannot create a temporary file in $dir: (Read-only file system|Operation not permitted|Permission denied|Not a directory)$"
			[ ! -d "$dir" ] || [ -z "$(ls -A "$dir")" ]
		done
		# the cache is only a help: a read-only one is a warning
		run --separate-stderr "$ROOT/bin/sa-encode" -q -m "$D/m.gguf" -a "$D/a.gguf" \
		    --cache-dir "$dir/cache" -o "$T/cached.delta" "$D/d.tsv"
		assert_success
		[[ "$stderr" == *"(not cached)" ]]
		cmp "$T/cached.delta" "$D/d.delta"
	done
	[ "${#dirs[@]}" -ge 2 ]
}

@test "a file that cannot be replaced (/proc/version): 73, the step that failed and its path" {
	for t in $WRITERS; do
		built $t || continue
		run -73 write_with $t /proc/version
		assert_output "sa-$t: /proc/version: cannot create a temporary file in /proc: No such file or directory"
	done
}

@test "an output that is a symbolic link: the target is replaced, the link stays" {
	mkdir "$T/real"
	for t in $WRITERS; do
		built $t || continue
		ln -s real/$t.rel "$T/$t.rel"        # relative, to a file not there yet
		ln -s "$T/real/$t.abs" "$T/$t.abs"   # absolute
		ln -s $t.rel "$T/$t.two"             # to a link
		for l in rel abs two; do
			write_with $t "$T/$t.$l"
			[ -L "$T/$t.$l" ]
		done
		[ -s "$T/real/$t.rel" ] && [ -s "$T/real/$t.abs" ]
	done
	[ -z "$(temps_in "$T")" ] && [ -z "$(temps_in "$T/real")" ]
}

@test "SIGINT or SIGTERM while sa-encode waits on a slow pipe: old delta intact, no temporary" {
	for sig in INT TERM; do
		cp "$D/d.delta" "$T/out.delta"
		rm -f "$T/fifo" && mkfifo "$T/fifo"
		bg_default "$ROOT/bin/sa-encode" -q -m "$D/m.gguf" -a "$D/a.gguf" -F tsv -o "$T/out.delta" "$T/fifo" &
		pid=$!
		exec 5> "$T/fifo"          # the writer end stays open: sa-encode waits
		printf 'input\tlabel\ncow\tcows\n' >&5
		sleep 0.3
		kill -$sig $pid
		for i in $(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
		exec 5>&-                  # had the signal been lost, this ends the wait
		st=0
		wait $pid || st=$?
		assert_equal "$sig $st" "$sig $((128 + $(kill -l $sig)))"
		cmp "$D/d.delta" "$T/out.delta"
		[ -z "$(temps_in "$T")" ]
	done
}

# Start a writer in the background, wait for its temporary file to appear
# (it is then writing), and send the signal.  Prints the exit status.
signal_mid_write() {
	local sig=$1 dir=$2
	shift 2
	bg_default "$@" &
	local pid=$! i st=0 seen=
	for i in $(seq 1000); do
		[ -n "$(temps_in "$dir")" ] && { seen=1; break; }
		sleep 0.01
	done
	kill -$sig $pid
	wait $pid || st=$?
	[ -n "$seen" ] || { echo "no temporary file seen"; return 1; }
	echo "$st"
}

@test "SIGINT, SIGTERM or SIGHUP in the middle of writing a delta: old delta intact, no temporary" {
	for sig in INT TERM HUP; do
		cp "$D/d.delta" "$T/out.delta"
		run signal_mid_write $sig "$T" "$ROOT/bin/sa-merge" -q -o "$T/out.delta" "$D/big.delta"
		assert_output "$((128 + $(kill -l $sig)))"
		cmp "$D/d.delta" "$T/out.delta"
		[ -z "$(temps_in "$T")" ]
	done
}

@test "a signal in the middle of writing a checkpoint: a whole checkpoint, no temporary" {
	built train || skip "sa-train not built"
	# a model large enough that each checkpoint takes a while to write
	big="--pretrain --vocab $D/m.gguf --text $D/text.txt --dim 128 --layers 2 --heads 4 --kv-heads 4 --ctx 16 --batch-tokens 32 --micro 2 --eval-every 0 -t 1 -q"
	for sig in INT TERM HUP; do
		rm -rf "$T/ck" "$T/s.gguf"
		run signal_mid_write $sig "$T/ck" "$ROOT/bin/sa-train" $big --steps 100000 \
		    --ckpt-every 1 --ckpt "$T/ck" -o "$T/s.gguf"
		assert_success
		# each stops the run after a last, whole checkpoint
		assert_output "$((128 + $(kill -l $sig)))"
		assert_equal "$sig left: $(temps_in "$T/ck") $(temps_in "$T")" "$sig left:  "
		run "$ROOT/bin/sa-train" $big --steps 1 --ckpt "$T/ck" -o "$T/s.gguf" --resume -v
		assert_success
		assert_output --partial "resumed from"
	done
}

@test "the reader of a pipe goes away (| head -c 10): no crash report, nothing on stderr" {
	# outputs larger than a pipe's buffer, so the writer must meet the closed end
	awk 'BEGIN { print "input\tlabel"; for (i = 0; i < 20000; i++) print "word" i "\tlabel" i }' > "$T/many.tsv"
	for i in $(seq 300); do printf '{"prompt":"the cat %d","score":true}\n' $i; done > "$T/batch.jsonl"
	for cmd in \
	    "'$ROOT/bin/sa-encode' --dump '$T/many.tsv'" \
	    "'$ROOT/bin/sa-merge' -q '$D/big.delta'" \
	    "'$ROOT/bin/sa-info' -j $(printf "'$D/m.gguf' %.0s" $(seq 400))" \
	    "'$ROOT/bin/sa-run' -m '$D/m.gguf' --batch '$T/batch.jsonl'"; do
		run bash -c "$cmd 2> '$T/err' | head -c 10 > /dev/null; echo \${PIPESTATUS[0]}"
		# killed by SIGPIPE (141), or done before the reader left (0)
		assert_output --regexp '^(141|0)$'
		[ ! -s "$T/err" ] || { cat "$T/err"; false; }
	done
}

@test "the reader of a pipe is gone and SIGPIPE is ignored: exit 74, one line" {
	run bash -c "trap '' PIPE; '$ROOT/bin/sa-merge' -q '$D/big.delta' | head -c 10 > /dev/null; echo \${PIPESTATUS[0]}"
	assert_output --regexp "^sa-merge: stdout: Broken pipe"$'\n'"74$"
}

@test "headers that would need absurd memory are bad data (65) under a small memory limit" {
	[ -z "${SA_SANITIZED:-}" ] || skip "sanitizers reserve terabytes of address space"
	# 2^60 tensors in a 24-byte GGUF
	printf 'GGUF\003\000\000\000\000\000\000\000\000\000\000\020\000\000\000\000\000\000\000\000' > "$T/many.gguf"
	# a delta header at every limit
	{ printf 'SADELTA\000\001\000\000\000\000\000\000\000'; head -c 16 /dev/zero
	  printf '\000\020\000\000\000\020\000\000\000\020\000\000\000\000\001\000\001\000\000\000\177\000\000\000'; } > "$T/limits.delta"
	# OpenBLAS workers allocate large buffers at start; with one thread the
	# limit measures the tools alone.
	export OPENBLAS_NUM_THREADS=1
	ulimit -v 250000
	run -65 "$ROOT/bin/sa-run" -m "$T/many.gguf" -p hi
	assert_output --partial "many.gguf: truncated"
	run -65 "$ROOT/bin/sa-info" "$T/many.gguf"
	run -65 "$ROOT/bin/sa-info" "$T/limits.delta"
	assert_output --partial "exceeds the limit"
	run -65 "$ROOT/bin/sa-merge" "$T/limits.delta"
	# a valid header promising 1.9 GB of state, and no state
	run -65 "$ROOT/bin/sa-info" "$F/huge-claim.delta"
	assert_output --partial "truncated"
	run -65 "$ROOT/bin/sa-merge" -o "$T/x.delta" "$F/huge-claim.delta"
	# an 80 KB adapter whose header needs a 256 MiB query tensor
	run -65 "$ROOT/bin/sa-info" "$F/huge-rank.gguf"
	assert_output --partial "missing tensor blk.0.attn_q.sa_q"
	run -65 "$ROOT/bin/sa-encode" -m "$D/m.gguf" -a "$F/huge-rank.gguf" -o "$T/x.delta" "$D/d.tsv"
	[ ! -e "$T/x.delta" ]
}

@test "NaN or infinity in a delta or an adapter is bad data (65)" {
	for f in nan inf; do
		run -65 "$ROOT/bin/sa-info" "$F/$f.delta"
		assert_output "sa-info: $F/$f.delta: non-finite value in h of layer 0 attn_q"
		run -65 "$ROOT/bin/sa-merge" -o "$T/x.delta" "$F/$f.delta"
		run -65 "$ROOT/bin/sa-run" -m "$D/m.gguf" -d "$F/$f.delta" -p hi
	done
	[ ! -e "$T/x.delta" ]
	# a NaN and an infinity in the adapter's tensors (all F32, past the header)
	for bits in '\000\000\300\177' '\000\000\200\377'; do
		cp "$D/a.gguf" "$T/a.gguf"
		sz=$(stat -c %s "$T/a.gguf")
		printf "$bits" | dd of="$T/a.gguf" bs=1 seek=$((sz / 2 / 4 * 4)) conv=notrunc status=none
		run -65 "$ROOT/bin/sa-info" "$T/a.gguf"
		assert_output --regexp "a.gguf: tensor blk\.[0-9]+\.[a-z_]+\.sa_[a-z0-9]+ holds a non-finite value$"
		run -65 "$ROOT/bin/sa-encode" -m "$D/m.gguf" -a "$T/a.gguf" -o "$T/x.delta" "$D/d.tsv"
	done
}

@test "NaN or infinity in a model's weights is bad data (65)" {
	"$ROOT/tests/helpers/mkmodel" -t f16 --layers 1 -o "$T/m16.gguf"
	# F32 NaN and -Inf, F16 +Inf, in the last tensor of the file
	for case in "m.gguf \000\000\300\177" "m.gguf \000\000\200\377" "m16.gguf \000\174"; do
		set -- $case
		[ "$1" = m.gguf ] && cp "$D/m.gguf" "$T/bad.gguf" || cp "$T/m16.gguf" "$T/bad.gguf"
		sz=$(stat -c %s "$T/bad.gguf")
		printf "$2" | dd of="$T/bad.gguf" bs=1 seek=$((sz - 400)) conv=notrunc status=none
		run -65 "$ROOT/bin/sa-run" -m "$T/bad.gguf" -p hi
		assert_output --regexp "^sa-run: $T/bad.gguf: tensor [a-z_.0-9]+ holds a non-finite value in row [0-9]+$"
		run -65 "$ROOT/bin/sa-info" "$T/bad.gguf"
		run -65 "$ROOT/bin/sa-encode" -m "$T/bad.gguf" -a "$D/a.gguf" -o "$T/x.delta" "$D/d.tsv"
		[ ! -e "$T/x.delta" ]
	done
	# the same bytes with a finite value load
	cp "$T/m16.gguf" "$T/bad.gguf"
	printf '\000\074' | dd of="$T/bad.gguf" bs=1 seek=$((sz - 400)) conv=notrunc status=none
	run -0 "$ROOT/bin/sa-info" "$T/bad.gguf"
}

@test "two processes writing one output at once: one whole result, no temporary" {
	"$ROOT/bin/sa-merge" -q -o "$T/one.delta" "$D/mid1.delta"
	"$ROOT/bin/sa-merge" -q -o "$T/two.delta" "$D/mid2.delta"
	for round in 1 2 3; do
		"$ROOT/bin/sa-merge" -q -o "$T/out.delta" "$D/mid1.delta" &
		p1=$!
		"$ROOT/bin/sa-merge" -q -o "$T/out.delta" "$D/mid2.delta" &
		p2=$!
		wait $p1
		wait $p2
		cmp -s "$T/out.delta" "$T/one.delta" || cmp "$T/out.delta" "$T/two.delta"
		[ -z "$(temps_in "$T")" ]
		rm "$T/out.delta"
	done
	# sa-encode and sa-init the same way
	for round in 1 2; do
		"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 2 -C 8 --seed 1 -o "$T/a.gguf" &
		p1=$!
		"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 2 -C 8 --seed 2 -o "$T/a.gguf" &
		p2=$!
		wait $p1
		wait $p2
		run "$ROOT/bin/sa-info" "$T/a.gguf"
		assert_success
		[ -z "$(temps_in "$T")" ]
	done
}
