# the probe's Hopper statistics: A/B of whole searches, then pytest -m gpu as one command
export R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd /tmp && timeout 120 python3 $R/.device/session/lse_ab.py $OUT/lse-ab > $OUT/lse-ab.log 2>&1; echo rc=$?; grep "^{" $OUT/lse-ab.log | python3 -c "
import sys, json
for l in sys.stdin:
    r = json.loads(l); print(r['tokens'], r['page'], {k: round(v, 3) for k, v in r['search_ms'].items()}, {k: round(v, 3) for k, v in r['probe_ms'].items()}, r['count_diff'], r['total_count'], r['probe_rel_err_H_vs_P'])
    if 'profile_H' in r: print('H', r['profile_H']); print('P', r['profile_P'])
"; tail -3 $OUT/lse-ab.log | cut -c1-300
cd $R/tests && timeout 460 python3 -m pytest -q -m gpu -p no:cacheprovider --tb=short --ignore=test_hopper_attention_gpu.py > $OUT/gpu_tests.log 2>&1; echo rc=$?; tail -8 $OUT/gpu_tests.log | cut -c1-300
