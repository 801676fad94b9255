"""Connected regions of binary pixel sets, in numpy: vessel pieces and branch points for the
vessel statistics, the field of view's largest region for Stage I's samples."""

from __future__ import annotations

import numpy as np

# Neighbours looked at forward from each pixel; the reverse directions come from the pairs.
_OFFSETS = {4: ((0, 1), (1, 0)), 8: ((0, 1), (1, -1), (1, 0), (1, 1))}


def component_labels(
    coords: np.ndarray, shape: tuple[int, int], *, connectivity: int = 8
) -> np.ndarray:
    """Connected-component labels (representative indices) for (K, 2) pixel coordinates,
    4- or 8-connected."""
    k = len(coords)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    index = np.full((shape[0] + 2, shape[1] + 2), -1, dtype=np.int64)
    index[coords[:, 0] + 1, coords[:, 1] + 1] = np.arange(k)
    us, vs = [], []
    for dy, dx in _OFFSETS[connectivity]:
        other = index[coords[:, 0] + 1 + dy, coords[:, 1] + 1 + dx]
        keep = other >= 0
        us.append(np.nonzero(keep)[0])
        vs.append(other[keep])
    u, v = np.concatenate(us), np.concatenate(vs)
    labels = np.arange(k)
    # Min-label propagation with pointer jumping: converges in a few dozen rounds even for
    # long vessels, all in numpy.
    while True:
        old = labels
        m = np.minimum(labels[u], labels[v])
        labels = labels.copy()
        np.minimum.at(labels, u, m)
        np.minimum.at(labels, v, m)
        labels = labels[labels]
        if np.array_equal(labels, old):
            return labels
