# the scores pass, second version: its GPU tests, then the A/B against the first and the portable one
export R=$PWD
export GIT_REV=$(cat .device/session/rev)
source scripts/gpu_setup.sh
cd $R/tests && timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider --tb=short -x test_hopper_probe_gpu.py > $OUT/probe_tests.log 2>&1; echo rc=$?; tail -15 $OUT/probe_tests.log | cut -c1-400
cd /tmp && timeout 300 python3 $R/.device/session/scores_ab.py $OUT/scores-ab > $OUT/scores-ab.log 2>&1; echo rc=$?; grep -v "^{" $OUT/scores-ab.log | tail -5 | cut -c1-300; grep "^{" $OUT/scores-ab.log | python3 -c "
import sys, json
for l in sys.stdin:
    r = json.loads(l)
    print(r['tokens'], r['page'], r.get('probe_ms'), r.get('search_ms'), r['count_diff'], r['H_deterministic'], r['probe_rel_err_H_vs_P'], r['probe_rel_err_H_vs_V1'], r.get('blocks_per_program_probe_ms'))
"
