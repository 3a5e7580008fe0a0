import sys
from sass_seq import compiled_variant
c = compiled_variant(sys.argv[1])
ptx = c.asm["ptx"]
lines = ptx.splitlines()
idx = [i for i, l in enumerate(lines) if "wgmma.wait_group" in l or "wgmma.commit" in l or "shfl" in l or "ex2" in l or "bar.sync" in l or "bra" in l or "wgmma.mma_async" in l]
prev = None
for i in idx:
    l = lines[i].strip()
    key = l.split()[0]
    print(i, l[:80])
