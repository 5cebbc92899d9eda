#!/usr/bin/env bats
# The command-line conventions of doc/conventions (the brief's list), checked
# on every tool found in bin/: --help and --version, getopt_long short and
# long options accepted as the help lists them, the same letters for the
# same things across tools, usage errors, messages prefixed with the tool's
# name, '-' for stdin and stdout, a failed write to stdout (exit 74), and a
# man page whose EXIT STATUS lists the statuses the tool uses.
#
# Known departures, reported to the owners of those tools, are listed in
# KNOWN below; any other one fails.  A new tool needs an entry in
# invocation() so that its data path is checked too.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

KNOWN=(
	"sa-eval: -k has no long form"
	"sa-eval: -K has no long form"
	"sa-train: --adapter has no short form -a"
)

setup_file() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	D="$BATS_FILE_TMPDIR"
	"$ROOT/tests/helpers/mkmodel" --seed 4 --kv-heads 2 -o "$D/m.gguf"
	"$ROOT/bin/sa-init" -m "$D/m.gguf" -r 2 -C 8 --w1-scale 0.5 -o "$D/a.gguf"
	printf 'input\tlabel\ngreat film\tpos\ndull plot\tneg\n' > "$D/x.tsv"
	"$ROOT/bin/sa-encode" -q -m "$D/m.gguf" -a "$D/a.gguf" -o "$D/x.delta" "$D/x.tsv"
	"$ROOT/bin/sa-encode" -q --cache-dir "$D/cache" -m "$D/m.gguf" -a "$D/a.gguf" \
	    -o /dev/null "$D/x.tsv"
	echo 'some text to read' > "$D/t.txt"
	# a delta whose adapter is gone: the default adapter stands in
	cp "$D/a.gguf" "$D/lost.gguf"
	"$ROOT/bin/sa-encode" -q -m "$D/m.gguf" -a "$D/lost.gguf" -o "$D/lost.delta" "$D/x.tsv"
	rm "$D/lost.gguf"
	mkdir -p "$D/pool"
	printf 'apple\nbread\nchair\ndoor\n' > "$D/pool/words.txt"
	printf 'red\nblue\ngreen\nbig\n' > "$D/pool/labels.txt"
	mkdir -p "$D/help"
	for src in "$ROOT"/bin/sa-*.c; do
		t=$(basename "$src" .c)
		"$ROOT/bin/$t" --help > "$D/help/$t" 2>/dev/null || true
	done
}

setup() {
	ROOT="$(cd "$BATS_TEST_DIRNAME/.." && pwd)"
	# Run by name, so that argv[0] (and getopt's messages) is the name.
	PATH="$ROOT/bin:$PATH"
	D="$BATS_FILE_TMPDIR"
	T="$BATS_TEST_TMPDIR"
	cd "$T"
}

tools() {
	local src
	for src in "$ROOT"/bin/sa-*.c; do
		basename "$src" .c
	done
}

# Problems not in KNOWN, one a line; fail with them if any.
report() {
	local p k new=()
	for p in "$@"; do
		for k in "${KNOWN[@]}"; do
			[ "$p" = "$k" ] && continue 2
		done
		new+=("$p")
	done
	[ ${#new[@]} -eq 0 ] || fail "$(printf '%s\n' "${new[@]}")"
}

# Every option token of TOOL's --help (as setup_file saved it): "-x" and "--long", in order, where
# option lines begin, after ", " or after two spaces.
help_tokens() {
	awk '/^[ \t]+-/ { line = $0
		while (match(line, /(^[ \t]+|  +|, )--?[A-Za-z][A-Za-z0-9-]*/)) {
			tok = substr(line, RSTART, RLENGTH); sub(/^[ \t,]+/, "", tok); print tok
			line = substr(line, RSTART + RLENGTH) } }' "$D/help/$1"
}

# "x long" for every "-x, --long" of TOOL's --help.
help_pairs() {
	grep -oE -- '-[A-Za-z0-9], --[a-z0-9][a-z0-9-]*' "$D/help/$1" | sed 's/^-\(.\), --/\1 /'
}

@test "every tool in bin/ is built" {
	local t missing=()
	for t in $(tools); do
		[ -x "$ROOT/bin/$t" ] || missing+=("$t")
	done
	[ ${#missing[@]} -eq 0 ] || fail "not built: ${missing[*]}"
	[ "$(tools | wc -l)" -ge 8 ]
}

@test "--help and -h: the usage on stdout, nothing on stderr, exit 0" {
	local t p=()
	for t in $(tools); do
		for o in --help -h; do
			run --separate-stderr "$t" $o
			[ "$status" -eq 0 ] || p+=("$t: $o exits $status")
			[[ "$output" == *"usage: $t"* ]] || p+=("$t: $o does not print 'usage: $t'")
			[ -z "$stderr" ] || p+=("$t: $o writes to stderr")
		done
	done
	report "${p[@]}"
}

@test "--version and -V: 'tool X.Y.Z' on stdout, exit 0" {
	local t p=()
	for t in $(tools); do
		for o in --version -V; do
			run --separate-stderr "$t" $o
			[ "$status" -eq 0 ] && [[ "$output" =~ ^$t\ [0-9]+\.[0-9]+\.[0-9]+$ ]] ||
			    p+=("$t: $o gives status $status, '$output'")
			[ -z "$stderr" ] || p+=("$t: $o writes to stderr")
		done
	done
	report "${p[@]}"
}

@test "an unknown option: exit 64, the usage and the tool's name on stderr, nothing on stdout" {
	local t p=()
	for t in $(tools); do
		run --separate-stderr "$t" --no-such-option < /dev/null
		[ "$status" -eq 64 ] || p+=("$t: unknown option exits $status")
		[ -z "$output" ] || p+=("$t: unknown option writes to stdout")
		[[ "$stderr" == "$t: "* ]] || p+=("$t: unknown option: message not prefixed '$t: '")
		[[ "$stderr" == *"usage: $t"* ]] || p+=("$t: unknown option: no usage on stderr")
		# every line is the tool's message or the synopsis
		while IFS= read -r line; do
			[[ "$line" == "$t: "* || "$line" == "usage: "* || "$line" == " "* ]] ||
			    p+=("$t: stray stderr line '$line'")
		done <<< "$stderr"
	done
	report "${p[@]}"
}

@test "getopt_long: every option the help lists is accepted, short and long" {
	local t tok p=()
	for t in $(tools); do
		grep -q 'opts_parse(' "$ROOT/bin/$t.c" || p+=("$t: does not parse with tool.h's opts_parse")
		# (-h, --help, -V and --version have a test of their own)
		for tok in $(help_tokens "$t" | grep -vxE -- '-h|--help|-V|--version' | sort -u); do
			# an argument for the option, or an operand; --help ends the parse
			run --separate-stderr timeout 20 "$t" "$tok" 1 --help < /dev/null
			if [[ "$stderr" == *"unrecognized option"* || "$stderr" == *"invalid option"* ]]; then
				p+=("$t: $tok is in the help but not accepted")
			fi
		done
	done
	report "${p[@]}"
}

@test "every short option has a long form" {
	local t tok p=()
	for t in $(tools); do
		for tok in $(help_tokens "$t" | grep -E '^-[A-Za-z]$' | sort -u); do
			help_pairs "$t" | grep -q "^${tok#-} " || p+=("$t: $tok has no long form")
		done
	done
	report "${p[@]}"
}

@test "the same letters mean the same things: -m -a -o -t -c -q -v -h -V, and across tools" {
	local -A canon=([m]=model [a]=adapter [o]=output [t]=threads [c]=ctx-size \
	    [q]=quiet [v]=verbose [h]=help [V]=version)
	local -A seen
	local t x long p=()
	for t in $(tools); do
		while read -r x long; do
			if [ -n "${canon[$x]:-}" ] && [ "${canon[$x]}" != "$long" ]; then
				p+=("$t: -$x is --$long, not --${canon[$x]}")
			fi
			if [ -n "${seen[$x]:-}" ] && [ "${seen[$x]%% *}" != "$long" ]; then
				p+=("$t: -$x is --$long, elsewhere --${seen[$x]%% *}")
			fi
			[ -n "${seen[$x]:-}" ] || seen[$x]="$long $t"
		done < <(help_pairs "$t" | sort -u)
		# a canonical long option comes with its letter
		for x in "${!canon[@]}"; do
			long=${canon[$x]}
			if help_tokens "$t" | grep -qx -- "--$long" &&
			    ! help_pairs "$t" | grep -qx "$x $long"; then
				p+=("$t: --$long has no short form -$x")
			fi
		done
	done
	report "${p[@]}"
}

# A command that writes data to stdout, for each tool; "" when the tool
# needs more than a test can give it in seconds (then its --help and
# --version carry the stdout checks).  Each prints DATA when it is run.
invocation() {
	case $1 in
	sa-cache) echo "sa-cache list $D/cache";;
	sa-encode) echo "sa-encode -q -m $D/m.gguf -a $D/a.gguf $D/x.tsv";;
	sa-eval) echo "";;
	sa-export) echo "sa-export -m $D/m.gguf $D/x.delta";;
	sa-info) echo "sa-info $D/x.delta";;
	sa-init) echo "sa-init -m $D/m.gguf -r 2 -C 8";;
	sa-merge) echo "sa-merge $D/x.delta $D/x.delta";;
	sa-run) echo "sa-run -m $D/m.gguf --temp 0 -n 4 -p hello";;
	sa-train) echo "";;
	*) echo "unknown";;
	esac
}

@test "every tool has a data invocation in this file (or a reason for none)" {
	local t p=()
	for t in $(tools); do
		[ "$(invocation "$t")" != unknown ] || p+=("$t: add it to invocation() in tests/conventions.bats")
	done
	report "${p[@]}"
}

@test "a failed write to stdout exits 74 with the tool's message: --help, --version, data" {
	[ -w /dev/full ] || skip "no /dev/full"
	local t cmd p=()
	for t in $(tools); do
		for o in --help --version; do
			run --separate-stderr sh -c "$t $o > /dev/full"
			[ "$status" -eq 74 ] || p+=("$t $o > /dev/full exits $status")
			[[ "$stderr" == "$t: "* ]] || p+=("$t $o > /dev/full: message '$stderr'")
		done
		cmd=$(invocation "$t")
		[ -n "$cmd" ] && [ "$cmd" != unknown ] || continue
		[ "$($cmd | wc -c)" -gt 0 ] || { p+=("$t: '$cmd' prints nothing"); continue; }
		run --separate-stderr sh -c "$cmd > /dev/full"
		[ "$status" -eq 74 ] || p+=("$t: '$cmd > /dev/full' exits $status")
		[[ "$stderr" == "$t: "* ]] || p+=("$t: '$cmd > /dev/full': message '$stderr'")
	done
	report "${p[@]}"
}

@test "-o - is stdout, the same bytes as -o FILE" {
	local t cmd p=()
	for t in $(tools); do
		help_pairs "$t" | grep -qx 'o output' || continue
		cmd=$(invocation "$t")
		[ -n "$cmd" ] && [ "$cmd" != unknown ] || continue
		$cmd -o "$T/$t.file" || { p+=("$t: '$cmd -o FILE' fails"); continue; }
		$cmd -o - > "$T/$t.stdout" || p+=("$t: '$cmd -o -' fails")
		$cmd > "$T/$t.default" || p+=("$t: '$cmd' fails")
		cmp -s "$T/$t.file" "$T/$t.stdout" || p+=("$t: -o - and -o FILE differ")
		cmp -s "$T/$t.file" "$T/$t.default" || p+=("$t: stdout and -o FILE differ")
	done
	report "${p[@]}"
}

@test "'-' reads stdin: the same result as the file, named stdin" {
	local p=()
	# sa-info: a delta
	[ "$(sa-info - < "$D/x.delta" | sed 1d)" = "$(sa-info "$D/x.delta" | sed 1d)" ] ||
	    p+=("sa-info: - and the file differ")
	# sa-merge: a delta
	sa-merge -o "$T/a.delta" - < "$D/x.delta" && cmp -s "$T/a.delta" "$D/x.delta" ||
	    p+=("sa-merge: - and the file differ")
	# sa-export: a delta
	sa-export -m "$D/m.gguf" -o "$T/a.gguf" - < "$D/x.delta"
	sa-export -m "$D/m.gguf" -o "$T/b.gguf" "$D/x.delta"
	cmp -s "$T/a.gguf" "$T/b.gguf" || p+=("sa-export: - and the file differ")
	# sa-encode: demonstrations (the sources are named stdin)
	sa-encode -q -F tsv -m "$D/m.gguf" -a "$D/a.gguf" -o "$T/s.delta" - < "$D/x.tsv"
	sa-info --json "$T/s.delta" | grep -q '"name":"stdin"' || p+=("sa-encode: stdin not named stdin")
	[ "$(sa-info --json "$T/s.delta" | sed 's/"file":"[^"]*",//; s/"sources".*//')" = \
	  "$(sa-info --json "$D/x.delta" | sed 's/"file":"[^"]*",//; s/"sources".*//')" ] ||
	    p+=("sa-encode: - and the file differ")
	# sa-run: the prompt
	[ "$(echo hello | sa-run -m "$D/m.gguf" --temp 0 -n 4 -f -)" = \
	  "$(sa-run -m "$D/m.gguf" --temp 0 -n 4 -p hello)" ] || p+=("sa-run: -f - and -p differ")
	report "${p[@]}"
}

@test "input that would come from a terminal is refused: exit 64, one line" {
	command -v script > /dev/null || skip "no script(1)"
	local c p=()
	# script(1) gives the command a pseudo-terminal as its standard input.
	while read -r c; do
		run script -qec "$c; echo status \$?" /dev/null < /dev/null
		[[ "$output" == "${c%% *}: refusing to read "*" from a terminal ("*$'\r\nstatus 64\r' ]] ||
		    p+=("$c: $output")
	done <<-EOF
	sa-run -m $D/m.gguf --temp 0 -n 4
	sa-run -m $D/m.gguf --temp 0 -n 4 -f -
	sa-run -m $D/m.gguf --batch -
	sa-run -m $D/m.gguf -d - -p hello
	sa-info
	sa-info $D/x.delta -
	sa-merge -o $T/m.delta
	sa-merge --sum -o $T/m.delta $D/x.delta -- -:2
	sa-export -m $D/m.gguf -o $T/e.gguf -
	sa-encode -m $D/m.gguf -a $D/a.gguf -o $T/e.delta
	sa-encode -m $D/m.gguf -a $D/a.gguf -o $T/e.delta --append - $D/x.tsv
	EOF
	# What does not read the terminal runs as before.
	run script -qec "sa-info $D/x.delta > /dev/null; echo status \$?" /dev/null < /dev/null
	[[ "$output" == $'status 0\r' ]] || p+=("sa-info FILE: $output")
	report "${p[@]}"
}

@test "a missing input: exit 66, one message prefixed with the tool's name" {
	local t cmd p=()
	for t in $(tools); do
		case $t in
		sa-cache) cmd="sa-cache list $T/none";;
		sa-encode) cmd="sa-encode -m $T/none.gguf -a $D/a.gguf -o $T/o $D/x.tsv";;
		sa-eval) cmd="sa-eval -m $T/none.gguf -a $D/a.gguf --task $T/none";;
		sa-export) cmd="sa-export -m $D/m.gguf -o $T/o $T/none.delta";;
		sa-info) cmd="sa-info $T/none.delta";;
		sa-init) cmd="sa-init -m $T/none.gguf -o $T/o";;
		sa-merge) cmd="sa-merge -o $T/o $T/none.delta";;
		sa-run) cmd="sa-run -m $T/none.gguf -p x";;
		sa-train) cmd="sa-train --pretrain --vocab $T/none.gguf -o $T/o --text $D/t.txt";;
		*) p+=("$t: add a missing-input case to tests/conventions.bats"); continue;;
		esac
		run --separate-stderr $cmd < /dev/null
		[ "$status" -eq 66 ] || p+=("$t: '$cmd' exits $status")
		[[ "$stderr" == "$t: "*"none"* ]] || p+=("$t: '$cmd': message '$stderr'")
		[ "$(printf '%s\n' "$stderr" | wc -l)" -eq 1 ] || p+=("$t: '$cmd': more than one line")
		[ ! -e "$T/o" ] || p+=("$t: '$cmd' left an output")
	done
	report "${p[@]}"
}

# A command of TOOL that needs the model (or, with "a", the adapter) but
# does not give it; every input but that one exists.
without() {
	case $1:$2 in
	sa-encode:m) echo "sa-encode -q -a $D/a.gguf -o $T/o $D/x.tsv";;
	sa-encode:a) echo "sa-encode -q -m $D/m.gguf -o $T/o $D/x.tsv";;
	sa-eval:m) echo "sa-eval -q -a $D/a.gguf --text $D/t.txt";;
	sa-eval:a) echo "sa-eval -q -m $D/m.gguf --text $D/t.txt";;
	sa-export:m) echo "sa-export -o $T/o $D/x.delta";;
	sa-export:a) echo "sa-export -m $D/m.gguf -o $T/o $D/lost.delta";;
	sa-init:m) echo "sa-init -o $T/o";;
	sa-run:m) echo "sa-run -n 1 -p hello";;
	sa-run:a) echo "sa-run -m $D/m.gguf -d $D/lost.delta -n 1 -p hello";;
	sa-train:m) echo "sa-train --adapter -o $T/o --pool $D/pool --steps 1";;
	*) echo "unknown";;
	esac
}

@test "SA_MODEL and SA_ADAPTER stand for -m and -a in every tool that takes them, as its man page says" {
	local t x var cmd m p=()
	for t in $(tools); do
		m="$ROOT/man/$t.1"
		for x in m a; do
			help_pairs "$t" | grep -qx "$x $([ $x = m ] && echo model || echo adapter)" || continue
			var=$([ $x = m ] && echo SA_MODEL || echo SA_ADAPTER)
			cmd=$(without "$t" $x)
			[ "$cmd" != unknown ] || { p+=("$t: add -$x to without() in tests/conventions.bats"); continue; }
			run --separate-stderr env "$var=$T/none-$x.gguf" $cmd < /dev/null
			[ "$status" -eq 66 ] && [[ "$stderr" == *"none-$x.gguf"* ]] ||
			    p+=("$t: $var is not the default of -$x (exit $status: $stderr)")
			awk '/^\.Sh ENVIRONMENT/ { f = 1; next } /^\.Sh/ { f = 0 } f' "$m" | grep -q "^\.It Ev $var" ||
			    p+=("$t.1: ENVIRONMENT does not describe $var")
		done
		# the same output as with the options, where a data command is known
		cmd=$(invocation "$t")
		[[ "$cmd" == *" -m $D/m.gguf"* ]] || continue
		cut=${cmd/ -m $D\/m.gguf/}
		[ "$(SA_MODEL="$D/m.gguf" SA_ADAPTER="$D/a.gguf" ${cut/ -a $D\/a.gguf/} | cksum)" = "$($cmd | cksum)" ] ||
		    p+=("$t: '$cmd' differs without -m and -a")
	done
	report "${p[@]}"
}

@test "man pages: one per tool, mandoc -Tlint clean, the sections, EXIT STATUS with the statuses used" {
	local -A code=([SA_EUSAGE]=64 [SA_EDATA]=65 [SA_ENOINPUT]=66 [SA_EINTERNAL]=70 \
	    [SA_ECANTCREAT]=73 [SA_EIO]=74)
	local t m s c listed p=()
	for t in $(tools); do
		m="$ROOT/man/$t.1"
		[ -f "$m" ] || { p+=("$t: no man page"); continue; }
		[ -z "$(mandoc -Tlint -W warning "$m" 2>&1)" ] || p+=("$t: mandoc -Tlint: $(mandoc -Tlint -W warning "$m" 2>&1 | head -n 1)")
		for s in NAME SYNOPSIS DESCRIPTION 'EXIT STATUS' EXAMPLES 'SEE ALSO'; do
			grep -qx ".Sh $s" "$m" || p+=("$t.1: no $s section")
		done
		listed=" $(awk '/^\.Sh EXIT STATUS/ { f = 1; next } /^\.Sh/ { f = 0 }
		    f && /^\.It [0-9]+$/ { printf "%s ", $2 }' "$m")"
		# 0, 64 (usage) and 74 (stdout) for every tool; and what it names
		for c in 0 64 74 $(grep -oE 'SA_E[A-Z]+' "$ROOT/bin/$t.c" | sort -u | while read -r s; do echo "${code[$s]:-}"; done); do
			[[ "$listed" == *" $c "* ]] || p+=("$t.1: EXIT STATUS does not list $c")
		done
	done
	report "${p[@]}"
}

@test "man pages describe every option the help lists" {
	local t tok m p=()
	for t in $(tools); do
		m="$ROOT/man/$t.1"
		[ -f "$m" ] || continue
		for tok in $(help_tokens "$t" | grep -- '^--' | sort -u); do
			grep -qE -- "(Fl|,) -${tok#--}( |$)" "$m" || p+=("$t.1: $tok is not described")
		done
	done
	report "${p[@]}"
}

@test "a usage error goes through tool.h's usage_die: no tool has a usage function of its own" {
	run grep -lE '^usage\(' "$ROOT"/bin/sa-*.c
	assert_failure
	assert_output ""
}

@test "options are one table each: getopt_long's table, the letters and --help come from tool.h's tool_opt" {
	grep -q 'getopt_long(' "$ROOT/bin/tool.h"
	run grep -lE 'struct option|getopt_long\(|^help\(' "$ROOT"/bin/sa-*.c
	assert_failure
	assert_output ""
}

@test "whether a matrix is adapted is asked of sa_adapted, not open-coded" {
	local hits
	hits=$(grep -nE 'mats\)? *>> *[a-z_]+\)? *& *1|mats *& *\(?1u? *<< *[a-z_]+' \
	    "$ROOT"/lib/*.c "$ROOT"/lib/*.h "$ROOT"/bin/*.c "$ROOT"/tests/unit/*.c \
	    "$ROOT"/tests/helpers/*.c | grep -v 'int sa_adapted(') || true
	[ -z "$hits" ] || { echo "$hits"; false; }
}
