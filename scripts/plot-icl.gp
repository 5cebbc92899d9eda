# plot-icl.gp - per-query cost of ICL against a delta as the number of
# demonstrations k grows, from the CSV files of tests/helpers/bench-icl
# (one row of three panels per model):
#
#   scripts/bench-icl.sh bench-out        (runs this script at the end)
#   gnuplot -e "csv1='a.csv'; name1='A'; csv2='b.csv'; name2='B'; png='icl-cost.png'" \
#       scripts/plot-icl.gp
#
# Columns: k, demo_tokens, segments, icl_ms, icl_cached_ms, delta_ms,
# delta_side_ms, icl_kv, delta_kv, cache_once_ms, encode_ms, merge_ms,
# side_ms, merged_bytes, side_bytes.  An empty field (ICL past the context)
# is no point; k = 0 has no place on the log axis and is left out.
if (!exists("csv1")) csv1 = 'icl.csv'
if (!exists("name1")) name1 = csv1
if (!exists("csv2")) csv2 = ''
if (!exists("name2")) name2 = csv2
if (!exists("png")) png = 'icl-cost.png'
rows = (csv2 eq '') ? 1 : 2

set datafile separator ','
set terminal pngcairo size 1200,(rows * 380 + 40) noenhanced font ',10'
set output png
set logscale xy 2
set format x '%g'
set format y '%g'
set grid
set key below maxrows 2 font ',9'
MiB = 1048576.0
k(c) = column(1) > 0 ? column(1) : NaN

set multiplot layout rows,3 title 'Per-query cost of in-context demonstrations (ICL) and of a delta (StreamAdapter)'
do for [i = 1:rows] {
	f = (i == 1) ? csv1 : csv2
	n = (i == 1) ? name1 : name2
	set xlabel 'demonstrations k'

	set title n . ': time per query'
	set ylabel 'ms'
	plot f using (k(0)):4 skip 1 with linespoints lw 2 pt 7 title 'ICL, recomputed', \
	     f using (k(0)):5 skip 1 with linespoints lw 2 pt 5 title 'ICL, KV cache reused', \
	     f using (k(0)):6 skip 1 with linespoints lw 2 pt 9 title 'delta, merged', \
	     f using (k(0)):7 skip 1 with linespoints lw 2 pt 11 title 'delta, side paths'

	set title n . ': one-time cost per set of demonstrations'
	set ylabel 'ms'
	plot f using (k(0)):10 skip 1 with linespoints lw 2 pt 5 title 'ICL: prefill of the cache', \
	     f using (k(0)):11 skip 1 with linespoints lw 2 pt 9 title 'delta: encoding', \
	     f using (k(0)):12 skip 1 with linespoints lw 2 pt 13 title 'delta: merging', \
	     f using (k(0)):13 skip 1 with linespoints lw 2 pt 11 title 'delta: side paths'

	set title n . ': memory beside the weights'
	set ylabel 'MiB'
	plot f using (k(0)):($8 / MiB) skip 1 with linespoints lw 2 pt 7 title 'ICL: KV cache', \
	     f using (k(0)):($9 / MiB) skip 1 with linespoints lw 2 pt 9 title 'delta: KV cache', \
	     f using (k(0)):($14 / MiB) skip 1 with lines dt 2 lw 2 title 'delta, merged: F32 copies', \
	     f using (k(0)):($15 / MiB) skip 1 with lines dt 3 lw 2 title 'delta, side paths: factors'
}
unset multiplot
