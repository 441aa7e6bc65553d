"""Division of a CCD image by the master flat, in place (muse_scibasic step 1).

``d = data / f``, ``stat = (stat + d² · stat_f) / f²`` and ``dq |= dq_f``, all in float32
in the order written (so :func:`divide_flat` and :func:`divide_flat_reference` agree to
the last bit); where the flat is not positive (or NaN) data and stat become 0 and
``dq |= badbit``. :func:`divide_flat` is the numba version (one parallel pass, no
temporaries), :func:`divide_flat_reference` the numpy twin used by the tests.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _divide(data, dq, stat, fdata, fdq, fstat, badbit):
    ny, nx = data.shape
    for y in prange(ny):
        for x in range(nx):
            f = fdata[y, x]
            q = dq[y, x] | fdq[y, x]
            if f > 0:
                d = data[y, x] / f
                stat[y, x] = (stat[y, x] + d * d * fstat[y, x]) / (f * f)
                data[y, x] = d
            else:
                data[y, x] = 0.0
                stat[y, x] = 0.0
                q |= badbit
            dq[y, x] = q


def divide_flat(data, dq, stat, fdata, fdq, fstat, badbit: int) -> None:
    """Divide ``data``/``stat`` (float32) by the flat ``fdata``/``fstat`` in place and OR
    ``fdq`` (and ``badbit`` where the flat is not positive) into ``dq`` (int32)."""
    _divide(data, dq, stat, fdata, fdq, fstat, np.int32(badbit))


def divide_flat_reference(data, dq, stat, fdata, fdq, fstat, badbit: int) -> None:
    """Numpy twin of :func:`divide_flat` (same float32 operations, same order)."""
    ok = fdata > 0
    fs = np.where(ok, fdata, 1.0).astype(np.float32)
    d = data / fs
    stat[...] = (stat + d * d * fstat) / (fs * fs)
    data[...] = np.where(ok, d, 0.0)
    stat[~ok] = 0.0
    dq |= fdq
    dq[~ok] |= badbit
