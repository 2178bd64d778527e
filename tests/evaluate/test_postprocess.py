"""keep_largest_component: each structure keeps its largest connected piece."""
import numpy as np

from mpscl.evaluate.metrics import components
from mpscl.evaluate.postprocess import keep_largest_component


def test_each_structure_keeps_its_largest_piece_and_nothing_else_changes():
    ids = np.zeros((8, 8, 4), np.uint8)
    ids[0:2, 0:2, 0:2] = 1          # class 1: a block of 8 voxels
    ids[2, 2, 2] = 1                # touching it at a corner: the same piece, kept
    ids[6, 6, 0] = 1                # an island of 1 voxel: dropped
    ids[4:6, 0:3, 0] = 2            # class 2: pieces of 6 and 4 voxels
    ids[0:2, 6:8, 3] = 2
    ids[7, 0, 3] = 3                # class 3: one voxel, one piece: kept
    before = ids.copy()
    out = keep_largest_component(ids, num_classes=5)  # class 4 absent
    assert np.array_equal(ids, before)  # not changed in place
    expect = before.copy()
    expect[6, 6, 0] = 0
    expect[0:2, 6:8, 3] = 0
    assert np.array_equal(out, expect)
    assert [components(out == c) for c in (1, 2, 3, 4)] == [1, 1, 1, 0]
    # one piece per structure already: unchanged
    assert np.array_equal(keep_largest_component(out, 5), out)
