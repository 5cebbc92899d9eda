# plot-map.gp - recall of random mappings against the number of pairs shown
# in the context, one line per method, from the CSV of sa-eval --map --csv:
#
#   sa-eval -m MODEL -a A1 -a A2 --map --pool data/pools --csv map.csv
#   gnuplot -e "csv='map.csv'; png='map.png'" scripts/plot-map.gp
#
# Columns: pairs, records, tokens, queries, then one accuracy (%) per method; an
# empty field (ICL once the pairs no longer fit the context) is no point.
if (!exists("csv")) csv = 'map.csv'
if (!exists("png")) png = 'map.png'

set datafile separator ','
set terminal pngcairo size 900,540 noenhanced font ',11'
set output png
set logscale x 2
set format x '%g'
set xlabel 'pairs shown in the context'
set ylabel 'accuracy on pairs shown (%)'
set yrange [0:100]
set grid
set key outside right top
set title 'Random mappings: in context (ICL) and absorbed into the weights (StreamAdapter)'

stats csv using 1 nooutput
plot for [i=5:STATS_columns] csv using 1:i with linespoints lw 2 pt 7 title columnheader(i)
