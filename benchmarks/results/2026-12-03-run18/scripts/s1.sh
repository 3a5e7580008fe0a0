# search variants: probe A (main) / T (probe-subtile-skew) with register caps; whole searches probe x top_mass (A / R radix-early-resolve)
R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd /tmp && timeout 250 python3 $R/.device/session/probe_ab.py $OUT/probe-ab > $OUT/probe-ab.log 2>&1; echo rc=$?; grep "^{" $OUT/probe-ab.log | cut -c1-140; tail -2 $OUT/probe-ab.log | cut -c1-300
cd /tmp && timeout 280 python3 $R/.device/session/search_ab.py $OUT/search-ab > $OUT/search-ab.log 2>&1; echo rc=$?; grep "^{" $OUT/search-ab.log | cut -c1-200; tail -2 $OUT/search-ab.log | cut -c1-300
