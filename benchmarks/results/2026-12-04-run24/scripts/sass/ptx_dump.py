import sys, re
src = open(__import__("os").path.join(__import__("os").path.dirname(__file__), "sass_seq.py")).read().split("from triton.backends.nvidia import compiler")[0]
exec(src)
ptx = c.asm["ptx"]
lines = ptx.splitlines()
idx = [i for i, l in enumerate(lines) if "wgmma.wait_group" in l or "wgmma.commit" in l or "shfl" in l or "ex2" in l or "bar.sync" in l or "bra" in l or "wgmma.mma_async" in l]
prev = None
for i in idx:
    l = lines[i].strip()
    key = l.split()[0]
    print(i, l[:80])
