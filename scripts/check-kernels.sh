#!/bin/sh
# check-kernels.sh - the whole test suite once per kernel path, for the
# paths a CPU in CI may take: the tests must pass whichever kernels run.
#
#   scripts/check-kernels.sh [path ...]
#   make check-kernels [KERNELS='path ...']
#
# A path is SA_KERNELS:OPENBLAS_CORETYPE, e.g. generic:Prescott; an empty
# half is left unset, which gives libsa's choice from the CPU's feature bits
# (the widest kernel path, and OpenBLAS's core type to go with it).  By
# default the paths this CPU can run of those a CPU would take: the portable
# kernels on OpenBLAS's SSE3 kernels (generic:Prescott, no AVX) and on its
# AVX ones (generic:Sandybridge, AVX without AVX2), AVX2 on OpenBLAS's
# Haswell and SkylakeX (AVX-512) kernels, AVX-512 on SkylakeX, and libsa's
# own choice for this CPU (:).
#
# The TAP of every run goes to the standard output, then one line per path
# with its tally.  Exit status 1 when a test failed on any path.
set -u
cd "$(dirname "$0")/.."

flags=$(grep -m 1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has() {
	for f; do
		case " $flags " in *" $f "*) ;; *) return 1 ;; esac
	done
}
if [ $# -eq 0 ]; then
	set -- generic:Prescott
	has avx && set -- "$@" generic:Sandybridge
	has avx2 fma f16c && set -- "$@" avx2:Haswell
	if has avx2 fma f16c avx512f avx512bw avx512vl avx512dq; then
		set -- "$@" avx2:SkylakeX avx512:SkylakeX
	fi
	set -- "$@" :
fi

log=$(mktemp) && tally=$(mktemp) || exit 70
trap 'rm -f "$log" "$tally"' EXIT
for path; do
	kernels=${path%%:*} core=${path#*:}
	case $path in *:*) ;; *) core= ;; esac
	echo "# SA_KERNELS=${kernels:-(libsa's choice)} OPENBLAS_CORETYPE=${core:-(libsa's choice)}"
	(
		if [ -n "$kernels" ]; then
			export SA_KERNELS="$kernels"
		else
			unset SA_KERNELS
		fi
		if [ -n "$core" ]; then
			export OPENBLAS_CORETYPE="$core"
		else
			unset OPENBLAS_CORETYPE
		fi
		bats --tap --print-output-on-failure tests/
	) | tee "$log"
	printf '%-20s %d passed, %d failed\n' "$path" "$(grep -c '^ok ' "$log")" \
	    "$(grep -c '^not ok ' "$log")" >> "$tally"
done
echo "# kernel paths"
cat "$tally"
! grep -q ' [1-9][0-9]* failed$' "$tally"
