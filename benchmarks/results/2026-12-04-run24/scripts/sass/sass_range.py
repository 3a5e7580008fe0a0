import sys, re
exec(open(__import__("os").path.join(__import__("os").path.dirname(__file__), "sass_seq.py")).read().split("ops = re.findall")[0])
lo, hi = int(sys.argv[3], 16), int(sys.argv[4], 16)
for l in sass.splitlines():
    m = re.search(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", l)
    if m and lo <= int(m.group(1), 16) <= hi:
        print(m.group(1), m.group(2)[:90])
