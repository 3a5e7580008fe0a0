"""The consumer loops of a SASS dump (backward branches whose body holds 16 HGMMA and
>= 60 MUFU): their instruction count and opcode histogram. Usage: python loopstat.py F.sass"""
import re, sys
from collections import Counter
sass=open(sys.argv[1]).read()
ins=[]
for l in sass.splitlines():
    m=re.search(r"/\*([0-9a-f]{4,})\*/\s+(.*?);",l)
    if m: ins.append((int(m.group(1),16),m.group(2).strip()))
loops=[]
for a,t in ins:
    m2=re.search(r"BRA.*?0x([0-9a-f]+)",t)
    if m2 and int(m2.group(1),16)<a:
        tgt=int(m2.group(1),16); body=[x for x in ins if tgt<=x[0]<=a]
        c=Counter(re.match(r"(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)",x[1]).group(1) for x in body)
        if c['HGMMA']==16 and c['MUFU']>=60: loops.append((hex(tgt),len(body),c))
for t,n,c in loops: print(t,n,sorted(c.items(),key=lambda kv:-kv[1]))
