"""Run 33: a power-cap-proof measure of the Gluon attention kernel. The H100/H200 run
under a power cap, so one kernel's time moves by 5-10% between calls (run 33: the
installed kernel 15.9 and 17.0 ms on the same case in two calls), more than the changes
being compared. SM cycles move far less with the clock. ``instrumented(src)`` rewrites a
copy of ``hopper_attention.py`` so that each consumer partition reads ``%clock64`` when
it starts and when its output is ready, and writes the difference, in place of the
log-sum-exp, to each of its query rows (the output is unchanged).

Usage: python cycles.py SRC DST   (writes the instrumented copy of SRC to DST)"""

import sys

CLOCK = '''

@gluon.jit
def _clock(like):
    """``%clock64`` (the SM's cycle counter) read by every thread, shaped as ``like``."""
    return gl.inline_asm_elementwise(
        "mov.u64 $0, %clock64;", "=l,r", [like], dtype=gl.int64, is_pure=False, pack=1
    )
'''

EDITS = [
    # the clock reader, before the consumer
    ("\n\n@gluon.jit\ndef _attention_consumer(", CLOCK + "\n\n@gluon.jit\ndef _attention_consumer("),
    # its first read, before the first wait
    ("    mbarrier.wait(ready.index(0), 0)\n",
     "    started = _clock(q_pos)\n    mbarrier.wait(ready.index(0), 0)\n"),
    # the cycles in place of the log-sum-exp
    ("        lse = (m_i + gl.log2(l_i)) * 0.6931471805599453  # base 2 -> natural log\n",
     "        lse = (_clock(q_pos) - started).to(gl.float32)\n"),
]


def instrumented(source: str) -> str:
    for old, new in EDITS:
        if source.count(old) != 1:
            raise ValueError(f"expected one {old.strip()[:50]!r} in the kernel source")
        source = source.replace(old, new)
    return source


if __name__ == "__main__":
    src, dst = sys.argv[1:3]
    with open(src) as f:
        text = instrumented(f.read())
    with open(dst, "w") as f:
        f.write(text)
