"""Arrow <-> numpy for the batch build (``shardwalk.build``), without pandas.

pyarrow's own conversions (Array.to_numpy, pa.array of a numpy array) import pandas, when it is
installed, on their first call in a process: 0.2-0.7 s of a worker's first block, or of the
driver's id merge after the scan (issue 27). These views of the buffers never do.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def _numpy(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric array as numpy: a zero-copy (read-only) view of its values when it has no
    nulls (chunks concatenated), else pyarrow's conversion (nulls become NaN)."""
    if isinstance(array, pa.ChunkedArray):
        if array.num_chunks == 1:
            return _numpy(array.chunk(0))
        dtype = np.dtype(array.type.to_pandas_dtype()) if _numeric(array.type) else None
        return np.concatenate([_numpy(c) for c in array.chunks] or [np.zeros(0, dtype)])
    if array.null_count or not _numeric(array.type):
        return array.to_numpy(zero_copy_only=False)
    dtype = np.dtype(array.type.to_pandas_dtype())
    if len(array) == 0:
        return np.zeros(0, dtype)
    data = array.buffers()[1]
    return np.frombuffer(data, dtype, len(array), array.offset * dtype.itemsize)


def _numeric(type_: pa.DataType) -> bool:
    return pa.types.is_integer(type_) or pa.types.is_floating(type_)


def _arrow(values: np.ndarray) -> pa.Array:
    """A 1-d numeric numpy array as an Arrow array without nulls (zero-copy when contiguous)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(
        pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)]
    )
