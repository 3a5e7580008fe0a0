import json
rows=[json.loads(l) for l in open(__import__('pathlib').Path(__file__).with_name('results.jsonl'))]
seen={}
for r in rows: seen[(r['text'],r['tokens'],r['spec'])]=r
for (t,n,s),r in sorted(seen.items(), key=lambda x:(x[0][0],x[0][1],x[1]['density'])):
    print(f"{t:5} {n:5} {s:58} {r['ppl_change']:+7.2f}% {r['top1']:6.2f}% {r['density']:.3f} {r['seconds']:5.0f}s")
