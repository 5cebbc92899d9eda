# bench-common.sh - what the bench-*.sh scripts share, sourced by each
# after it sets prog (its name in messages) and defines usage: its --help
# (the comment at its top), the checks of its arguments and of the tree,
# and a temporary directory removed when it exits.

# --help: the script's comment, from its second line up to "set -eu".
bench_help() {
	sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit 0
}

# Each argument a positive integer, else the usage.
bench_counts() {
	for v in "$@"; do
		case $v in ''|*[!0-9]*|0) usage ;; esac
	done
}

# -s: each of the comma-separated sets $1 one of the names $2 (which the
# message lists) or $3.
bench_sets() {
	for s in $(echo "$1" | tr , ' '); do
		case " $2 ${3-} " in
		*" $s "*) ;;
		*) echo "$prog: -s: unknown set '$s' ($(echo "$2" | sed 's/ /, /g'))" >&2; exit 64 ;;
		esac
	done
}

# Run from the top of the sa tree, with the programs "$@" built.
bench_tree() {
	[ -f lib/sa.h ] || { echo "$prog: run from the top of the sa tree" >&2; exit 64; }
	for f in "$@"; do
		[ -x "$f" ] || { echo "$prog: $f missing: make $f" >&2; exit 66; }
	done
}

# tmp: a directory of the run's own, removed when the script exits.
bench_tmp() {
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/sa-$prog.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	trap 'exit 130' INT TERM HUP
}
