"""The answer of ``GET /api/history/INSTRUMENT`` and `history_result`: channels, downsampled.

One definition for the hub that answers and the clients (and the dashboard)
that read it; `docs/data.md` describes the same shape for other languages.
The shape is columnar, ready for a plot (uPlot takes these arrays as they
are), and stable: fields may be added, none removed or changed::

    {"instrument": "kiln-air", "since": 1795557200.0, "until": 1795560800.0,
     "every": 60.0,
     "channels": [{"name": "temperature", "unit": "°C", "description": ""}],
     "t": [1795557200.0, 1795557260.0, ...],
     "series": {"temperature": {"count": [60, 58, ...], "min": [79.8, ...],
                                "max": [80.4, ...], "mean": [80.1, ...]}}}

`t` holds the start of each bucket that has at least one sample, oldest
first; bucket ``i`` covers ``[t[i], t[i] + every)``. Every array of `series`
runs parallel to `t`; where a channel had no numeric sample in a bucket,
its `count` is 0 and `min`, `max`, `mean` are null. Only numeric values are
aggregated: flags (``true``) and texts are left out. `channels` declares
each channel of `series` (its unit, as the instrument announced it).
"""

from __future__ import annotations

from .messages import ChannelSeries, History

__all__ = ["ChannelSeries", "History"]
