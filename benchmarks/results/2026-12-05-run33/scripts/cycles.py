"""Run 33: a power-cap-proof measure of the Gluon attention kernel. The H100/H200 run
under a power cap, so one kernel's time moves by 5-10% between calls (run 33: the
installed kernel 15.9 and 17.0 ms on the same case in two calls), more than the changes
being compared. SM cycles move far less with the clock. ``instrumented(src)`` rewrites a
copy of ``hopper_attention.py`` so that each consumer partition reads ``%clock64`` when
it starts and when its output is ready, and writes the difference, in place of the
log-sum-exp, to each of its query rows (the output is unchanged).

Usage: python cycles.py SRC DST   (writes the instrumented copy of SRC to DST)"""

import re
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
    (r"\n\n@gluon\.jit\ndef _attention_consumer\(",
     CLOCK.replace("\\", "\\\\") + "\n\n@gluon.jit\ndef _attention_consumer("),
    # its first read, before the first wait
    (r"\n    mbarrier\.wait\(ready\.index\(0\), 0\)\n",
     "\n    started = _clock(q_pos)\n    mbarrier.wait(ready.index(0), 0)\n"),
    # the cycles in place of the log-sum-exp
    (r"\n( +)lse = \(m_i \+ gl\.log2\(.*\n",
     r"\n\1lse = (_clock(q_pos) - started).to(gl.float32)\n"),
]


def instrumented(source: str) -> str:
    for pattern, replacement in EDITS:
        source, found = re.subn(pattern, replacement, source)
        if found != 1:
            raise ValueError(f"expected one match of {pattern!r} in the kernel source")
    return source


if __name__ == "__main__":
    src, dst = sys.argv[1:3]
    with open(src) as f:
        text = instrumented(f.read())
    with open(dst, "w") as f:
        f.write(text)
