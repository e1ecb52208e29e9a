set terminal pngcairo size 900,500 noenhanced
set output '/work/main/tests/../bench/latency.png'
set title 'produce → effect latency percentiles (1000/s)'
set ylabel 'ms'
 set logscale y
 set grid
 set key top left
plot '/work/main/tests/../bench/latency.dat' using 0:2:xtic(1) with linespoints dt 1 lw 2 title 'worker, fetch.wait.max.ms=25', '/work/main/tests/../bench/latency.dat' using 0:3:xtic(1) with linespoints dt 2 lw 2 title 'do-nothing, fetch.wait.max.ms=25', '/work/main/tests/../bench/latency.dat' using 0:4:xtic(1) with linespoints dt 1 lw 2 title 'worker, fetch.wait.max.ms=100', '/work/main/tests/../bench/latency.dat' using 0:5:xtic(1) with linespoints dt 2 lw 2 title 'do-nothing, fetch.wait.max.ms=100'
