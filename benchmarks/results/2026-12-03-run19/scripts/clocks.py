"""Does the H200 slow down under sustained load? The sparse attention at 128K gamma 0.9
(main's Gluon kernel, planted inputs) run back to back for 30 s, then FA3 dense at 128K
for 15 s, timing every call with CUDA events and sampling NVML (SM clock, power,
temperature, throttle reasons) after each; then, after 10 s idle, do_bench of the
attention once cold and once right after 15 s of load."""
import json, sys, os, math, time
R = os.environ["R"]; sys.path.insert(0, os.path.join(R, "scripts"))
import torch
from common import SCALE, B, bench, paper_config, planted, run_meta
from bench_kernels import Layer, computed_flops
from vllm_flexprefill.kernels import SparsePlan
from vllm_flexprefill.kernels.search import find_blocks
from vllm_flexprefill.kernels.sparse_attention import block_sparse_attention
try:
    from vllm.third_party import pynvml
except ImportError:
    import pynvml
pynvml.nvmlInit(); hnd = pynvml.nvmlDeviceGetHandleByIndex(0)
def nvml():
    return dict(sm_mhz=pynvml.nvmlDeviceGetClockInfo(hnd, pynvml.NVML_CLOCK_SM),
                mem_mhz=pynvml.nvmlDeviceGetClockInfo(hnd, pynvml.NVML_CLOCK_MEM),
                watts=pynvml.nvmlDeviceGetPowerUsage(hnd) / 1000,
                temp_c=pynvml.nvmlDeviceGetTemperature(hnd, pynvml.NVML_TEMPERATURE_GPU),
                throttle=int(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(hnd)))
out_dir = sys.argv[1]; os.makedirs(out_dir, exist_ok=True)
log = dict(meta=run_meta(), idle=nvml(), phases={})
n = 131072
q, k, v = planted(n, seed=n)
layer = Layer(q, k, v, [n], False)
plan = SparsePlan.build([n], [n], B, "cuda")
dense = torch.zeros(1, dtype=torch.bool, device="cuda")
res = find_blocks(q, layer.kv(), plan, paper_config(0.9), SCALE, dense)
flops = computed_flops(res, 128)
out = torch.empty_like(q)
kv = layer.kv()
attend = lambda: block_sparse_attention(q, kv, plan, res.kv_index, res.kv_count, SCALE, out)
from vllm.vllm_flash_attn import flash_attn_varlen_func
cu = torch.tensor([0, n], dtype=torch.int32, device="cuda")
fa3_out = torch.empty_like(q)
fa3 = lambda: flash_attn_varlen_func(q, k, v, n, cu, n, cu_seqlens_k=cu, softmax_scale=SCALE, causal=True, out=fa3_out, fa_version=3)
fa3_flops = 4.0 * 128 * 32 * n * n / 2
def sustained(fn, seconds, fl):
    samples = []; t0 = time.time()
    while time.time() - t0 < seconds:
        a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize()
        ms = a.elapsed_time(b)
        samples.append(dict(t=round(time.time() - t0, 3), ms=ms, tflops=fl / ms / 1e9, **nvml()))
    return samples
attend(); fa3(); torch.cuda.synchronize()
time.sleep(10); log["idle_after_warmup"] = nvml()
log["phases"]["sparse_30s"] = sustained(attend, 30, flops)
log["phases"]["fa3_15s"] = sustained(fa3, 15, fa3_flops)
time.sleep(10)
log["cold_do_bench"] = dict(ms=bench(attend), **nvml())
sustained(attend, 15, flops)
log["hot_do_bench"] = dict(ms=bench(attend), **nvml())
for key in ("cold_do_bench", "hot_do_bench"):
    log[key]["tflops"] = flops / log[key]["ms"] / 1e9
json.dump(log, open(f"{out_dir}/clocks.json", "w"), indent=1)
for name, s in log["phases"].items():
    for i in range(0, len(s), max(1, len(s) // 12)):
        x = s[i]; print(name, x["t"], f'{x["tflops"]:.0f}', x["sm_mhz"], x["mem_mhz"], f'{x["watts"]:.0f}W', x["temp_c"], hex(x["throttle"]))
print("idle", log["idle"], log["idle_after_warmup"])
print("cold", log["cold_do_bench"]); print("hot", log["hot_do_bench"])
