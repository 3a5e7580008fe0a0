import sys, re
from sass_seq import compiled_variant, sass_of
sass = sass_of(compiled_variant(sys.argv[1]))
lo, hi = int(sys.argv[3], 16), int(sys.argv[4], 16)
for l in sass.splitlines():
    m = re.search(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", l)
    if m and lo <= int(m.group(1), 16) <= hi:
        print(m.group(1), m.group(2)[:90])
