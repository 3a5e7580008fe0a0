"""Run 34: where a program of the Gluon attention kernel spends its cycles. Run 34's
counts fit ~2390 SM cycles a tile plus ~7950 a program (``benchmarks/NOTES.md``); this
rewrites a copy of ``hopper_attention.py`` (main's at 2ff7407 and any copy that keeps
its lines) so that each consumer reads ``%clock64`` at eight points of its walk and
writes, in place of its log-sum-exp, the cycles from the program's start to point k
into its k-th query row (rows 8 and up: -1; the output is unchanged):

  0 consumer entered (the program's block metadata loaded, barriers initialised)
  1 its query rows staged in shared memory
  2 the first key/value tile arrived
  3 the first tile's query-key product done
  4 the first tile's softmax done (probabilities converted for the second product)
  5 the loop over the other tiles done
  6 the last probability-value product done
  7 the output stored (issued)

and, for the programs' placement in time, row 8 the nanoseconds (``%globaltimer``) from
the program's start to mark 7, rows 9-11 the start's nanoseconds in three exact pieces
(bits 0-19, 20-39, 40-63), row 12 the SM it ran on (``%smid``).

Usage: python phases.py SRC DST   (writes the instrumented copy of SRC to DST)"""

from cycles import CLOCK, rewrite_file
from cycles import instrumented as apply_edits

POINTS = 8
TIMER_ROWS = 5  # rows 8-12: duration ns, start ns in three pieces, SM

SPECIAL = '''

@gluon.jit
def _globaltimer(like):
    """``%globaltimer`` (nanoseconds) read by every thread, shaped as ``like``."""
    return gl.inline_asm_elementwise(
        "mov.u64 $0, %globaltimer;", "=l,r", [like], dtype=gl.int64, is_pure=False,
        pack=1,
    )


@gluon.jit
def _smid(like):
    """``%smid`` (the SM running the thread), shaped as ``like``."""
    return gl.inline_asm_elementwise(
        "mov.u32 $0, %smid;", "=r,r", [like], dtype=gl.int32, is_pure=False, pack=1
    )
'''


def _mark(k: int) -> str:
    return f"t{k} = _clock(count)"


EDITS = [
    # the clock reader, before the consumer
    (r"\n\n@gluon\.jit\ndef _attention_consumer\(",
     (CLOCK + SPECIAL).replace("\\", "\\\\")
     + "\n\n@gluon.jit\ndef _attention_consumer(", 1),
    # the program's first read, before anything else it does
    (r"\n    h = gl\.program_id\(1\)\n", "\n    h = gl.program_id(1)\n    started = _clock(h)\n"
     "    started_ns = _globaltimer(h)\n    sm = _smid(h)\n", 1),
    # handed to the consumers (their signature and every partition's arguments)
    (r"count, r, kv_len, context, q_start, h, scale_log2,",
     "count, r, kv_len, context, q_start, h, scale_log2, started, started_ns, sm,",
     None),
    (r"(\n( +)FIRST: gl\.constexpr = .*\n)", r"\1\2" + _mark(0) + "\n", 1),
    (r"(\n( +)stage_queries\(q_tile, .*\n)", r"\1\2" + _mark(1) + "\n", 1),
    (r"(\n( +)mbarrier\.wait\(ready\.index\(0\), 0\)\n)", r"\1\2" + _mark(2) + "\n", 1),
    (r"(\n( +)s = warpgroup_mma\(q_tile, k_bufs\.index\(0\).*\n)", r"\1\2" + _mark(3) + "\n", 1),
    (r"(\n( +)l_i = _quad_sums\(p, ROWS\).*\n( +)acc = gl\.zeros.*\n( +)p_op = .*\n)",
     r"\1\2" + _mark(4) + "\n", 1),
    (r"(\n( +))(acc = warpgroup_mma\(p_op, v_bufs\.index\(last % STAGES\), acc\)\n)",
     r"\1" + _mark(5) + r"\1\3\2" + _mark(6) + "\n", 1),
    (r"(\n( +)gl\.store\(out_ptr \+ offsets, .*\n)",
     r"\1\2" + _mark(7) + r"\n\2t7_ns = _globaltimer(count)\n", 1),
    # the marks in place of the log-sum-exp: row k of the consumer holds mark k
    (r"\n( +)lse = \(m_i \+ gl\.log2\(.*\n",
     "\n\\1k = gl.arange(0, ROWS, layout=rows_layout)\n"
     "\\1lse = gl.full([ROWS], -1.0, gl.float32, layout=rows_layout)\n"
     + "".join(
         f"\\1lse = gl.where(k == {i}, (t{i} - started).to(gl.float32), lse)\n"
         for i in range(POINTS)
     )
     + "\\1lse = gl.where(k == 8, (t7_ns - started_ns).to(gl.float32), lse)\n"
     + "\\1lse = gl.where(k == 9, (started_ns & 0xFFFFF).to(gl.float32), lse)\n"
     + "\\1lse = gl.where(k == 10, ((started_ns >> 20) & 0xFFFFF).to(gl.float32), lse)\n"
     + "\\1lse = gl.where(k == 11, (started_ns >> 40).to(gl.float32), lse)\n"
     + "\\1lse = gl.where(k == 12, sm.to(gl.float32), lse)\n", 1),
]


def instrumented(source: str) -> str:
    """``source`` with the edits above (:func:`cycles.instrumented`)."""
    return apply_edits(source, EDITS)


if __name__ == "__main__":
    rewrite_file(instrumented)
