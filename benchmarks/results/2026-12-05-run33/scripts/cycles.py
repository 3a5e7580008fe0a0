"""Run 33: a power-cap-proof measure of the Gluon attention kernel. The H100/H200 run
under a power cap, so one kernel's time moves by 5-10% between calls (run 33: the
installed kernel 15.9 and 17.0 ms on the same case in two calls), more than the changes
being compared. SM cycles move far less with the clock. ``instrumented(src)`` rewrites a
copy of ``hopper_attention.py`` so that each program reads ``%clock64`` when it starts
(before its barriers and queries) and each consumer partition again when its output is
ready, and writes the difference, in place of the log-sum-exp, to each of its query rows
(the output is unchanged). With one program an SM, the programs' cycles add up to the
kernel's, prologue and epilogue included.

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
     CLOCK.replace("\\", "\\\\") + "\n\n@gluon.jit\ndef _attention_consumer(", 1),
    # the program's first read, before anything else it does
    (r"\n    h = gl\.program_id\(1\)\n", "\n    h = gl.program_id(1)\n    started = _clock(h)\n", 1),
    # handed to the consumers (their signature and every partition's arguments)
    (r"count, r, kv_len, context, q_start, h, scale_log2,",
     "count, r, kv_len, context, q_start, h, scale_log2, started,", None),
    # the cycles in place of the log-sum-exp
    (r"\n( +)lse = \(m_i \+ gl\.log2\(.*\n",
     r"\n\1lse = (_clock(q_pos) - started).to(gl.float32)\n", 1),
]


def instrumented(source: str, edits=EDITS) -> str:
    """``source`` with ``edits`` (default: the ones above), each found as often as it
    expects (None: at least twice, the consumer's signature and a partition's
    arguments)."""
    for pattern, replacement, expected in edits:
        source, found = re.subn(pattern, replacement, source)
        if found != expected and not (expected is None and found >= 2):
            raise ValueError(f"{found} matches of {pattern!r} in the kernel source")
    return source


def rewrite_file(rewrite) -> None:
    """The command line: ``SRC DST``, DST written as ``rewrite(SRC's text)``."""
    src, dst = sys.argv[1:3]
    with open(src) as f:
        text = rewrite(f.read())
    with open(dst, "w") as f:
        f.write(text)


if __name__ == "__main__":
    rewrite_file(instrumented)
