set terminal pngcairo size 900,500 noenhanced
set output '/work/main/tests/../bench/throughput-vs-batch.png'
set title 'cache-invalidation: throughput vs BATCH_MAX_MESSAGES (1 partition)'
set logscale x
 set xlabel 'BATCH_MAX_MESSAGES'
 set ylabel 'events/s'
set y2label 'worker CPU µs/event'
 set ytics nomirror
 set y2tics
 set logscale y
 set logscale y2
set key top left
 set grid
plot '/work/main/tests/../bench/throughput-vs-batch.dat' using 1:2 with linespoints lw 2 pt 7 title 'events/s', '/work/main/tests/../bench/throughput-vs-batch.dat' using 1:3 axes x1y2 with linespoints lw 2 pt 5 title 'CPU µs/event', 459557.10290444625 with lines dt 2 lw 2 title 'do-nothing consumer (same run)'
