"""Counter-based random numbers: draw ``i`` of walk ``w`` from source ``s`` is
``mix64(walk_key(seed, s, w) + i * GAMMA)`` (SplitMix64's output function over a counter), so a
walk depends only on (seed, source, walk index), never on the thread that ran it; and the
dangling rules' codes.

Numba only (see ``walks/kernels/__init__.py`` for the conventions every kernel shares).
"""

from __future__ import annotations

import numpy as np
from numba import njit

GAMMA = np.uint64(0x9E3779B97F4A7C15)
GAMMA2 = np.uint64(0xD1B54A32D192ED03)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_S11 = np.uint64(11)
_LOW32 = np.uint64(0xFFFFFFFF)
_INV53 = 1.0 / 9007199254740992.0
_INV32 = 1.0 / 4294967296.0

MODE_SELF_LOOP = 0
MODE_DROP = 1
MODE_RESTART = 2


# --------------------------------------------------------------------------------------------
# counter-based random numbers


@njit(cache=True, inline="always")
def mix64(z):
    """SplitMix64 output function (a bijection on uint64 with full avalanche)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def walk_key(seed, source, walk):
    """The counter base of walk ``walk`` from ``source`` (all three are ints >= 0)."""
    k = mix64(np.uint64(seed) * GAMMA2 + np.uint64(source))
    return mix64(k + np.uint64(walk) * GAMMA2)


@njit(cache=True, inline="always")
def draw(key, i):
    """Draw ``i`` (uint64) of the stream ``key``."""
    return mix64(key + np.uint64(i) * GAMMA)


@njit(cache=True, inline="always")
def to_unit(x):
    """uint64 -> float64 uniform in [0, 1)."""
    return float(x >> _S11) * _INV53


@njit(cache=True, inline="always")
def geometric_visits(key, alpha):
    """Number of visits L >= 1 of an alpha-terminated walk, from draw 0 of ``key``."""
    u = 1.0 - to_unit(draw(key, 0))  # in (0, 1]
    return 1 + np.int64(np.floor(np.log(u) / np.log1p(-alpha)))


@njit(cache=True)
def uniform_draws(seed, source, walk, count):
    """``count`` uniforms in [0, 1) of one walk's stream (used by tests of the generator)."""
    out = np.empty(count, np.float64)
    key = walk_key(seed, source, walk)
    for i in range(count):
        out[i] = to_unit(draw(key, i))
    return out


@njit(cache=True, inline="always")
def pick_slot(x, deg):
    """Slot in [0, deg) from the high 32 bits of draw ``x`` (multiply-shift)."""
    return np.int64(((x >> _S32) * np.uint64(deg)) >> _S32)


@njit(cache=True, inline="always")
def alias_coin(x):
    """Uniform in [0, 1) from the low 32 bits of draw ``x`` (the alias coin)."""
    return float(x & _LOW32) * _INV32
