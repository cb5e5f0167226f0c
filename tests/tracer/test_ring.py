"""The step ring: row ids bitcast into float32 columns survive every write path.

A row starts with its write index + 1 as an int64 split into two float32 columns by a
bitcast (gradtrace._ring.Ring.claim). Those bits are only copied, never computed with,
so an index whose halves read as float32 denormals or NaNs must come back exact through
the graph's concat and scatter, eagerly, in a ``tf.function`` and under XLA; a claimed
slot that was not written yet must not pass for a written one.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from gradtrace._ring import Ring  # noqa: E402
from gradtrace._stats import Layout, int_column  # noqa: E402

# Write indices whose two 32-bit halves are, as float32: a denormal (1), a quiet NaN
# (0x7FC00000), a signalling NaN (0x7F800001), negative zero (0x80000000), -Inf
# (0xFF800000), and beyond float32's exact integers.
STARTS = [0, 0x7FC00000 - 1, 0x7F800001 - 1, 0x80000000 - 1, 0xFF800000 - 1,
          (0x7FC00000 << 32) - 1, 2**40 + 12345]


def _ring(width: int = 6, size: int = 8) -> Ring:
    return Ring(Layout(width=width), size)


def _write(ring: Ring, payload):
    row_id, slot = ring.claim()
    ring.put(slot, tf.concat([row_id, payload], axis=0))


@pytest.mark.parametrize("how", ["eager", "function", "xla"])
@pytest.mark.parametrize("start", STARTS)
def test_row_ids_come_back_exact(how, start):
    ring = _ring()
    ring.count.assign(start)
    ring.read = start
    payload = tf.constant([1.5, -2.0, float("nan"), 4.0], tf.float32)
    write = (lambda p: _write(ring, p)) if how == "eager" else tf.function(
        lambda p: _write(ring, p), jit_compile=how == "xla", autograph=False)
    for k in range(3):
        write(payload + k)
    rows, lost = ring.drain()
    assert lost == 0
    assert len(rows) == 3, (how, start)
    block = np.stack(rows)
    assert int_column(block, 0).tolist() == [start + 1, start + 2, start + 3]
    np.testing.assert_array_equal(block[:, 2:4], [[1.5, -2.0], [2.5, -1.0], [3.5, 0.0]])
    assert np.isnan(block[:, 4]).all() and block[:, 5].tolist() == [4.0, 5.0, 6.0]


def test_a_claimed_row_not_yet_written_waits_for_the_next_drain():
    ring = _ring()
    _write(ring, tf.zeros([4]))
    ring.claim()  # claimed, not written: its slot still holds NaN
    rows, lost = ring.drain()
    assert (len(rows), lost, ring.read) == (1, 0, 1)
    slot = 2 % ring.size  # the claimed row (write index 1) lives in slot (1 + 1) mod size
    ring.put(tf.constant(slot, tf.int64), tf.concat([tf.bitcast(tf.constant(2, tf.int64), tf.float32),
                                                     tf.ones([4])], 0))
    rows, lost = ring.drain()
    assert (len(rows), lost, ring.read) == (1, 0, 2)
    assert int_column(np.stack(rows), 0).tolist() == [2]


def test_a_lapped_reader_counts_the_overwritten_rows_as_lost():
    ring = _ring(size=4)
    for k in range(10):
        _write(ring, tf.fill([4], float(k)))
    rows, lost = ring.drain()
    assert lost == 6 and len(rows) == 4
    assert [r[2] for r in rows] == [6.0, 7.0, 8.0, 9.0]
