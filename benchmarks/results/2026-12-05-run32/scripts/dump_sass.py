"""sm_90 SASS (stdout) and PTX (argv[2]) of a Gluon attention variant file (argv[1]).
Run 32: `python dump_sass.py VARIANT.py OUT.ptx > OUT.sass`, then `python loopstat.py OUT.sass`."""
import pathlib, sys
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "2026-12-04-run24" / "scripts" / "sass"))
from sass_seq import compiled_variant, sass_of
c = compiled_variant(sys.argv[1])
print(sass_of(c))
open(sys.argv[2], "w").write(c.asm["ptx"])
