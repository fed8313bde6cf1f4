"""Regenerate src/neocloud/data/philly_runtime_quantiles.json from the Philly runtime trace.

The synthetic trace generator samples run times by inverse CDF from this table, so the package
ships 211 numbers instead of the 83,154-row trace: 201 evenly spaced quantiles plus 10 more in
the top 1%, where a heavy tail (up to 4.6 million seconds) carries much of the mean. With
log-linear interpolation between quantiles, the 201 alone give a mean of 18,700 s against the
trace's 14,613 s; with the tail points it is 14,680 s. Zero run times are clipped to 1 s: a job that
takes no time would be a no-op in the twin.

    .venv/bin/python bench/make_runtime_quantiles.py [path/to/philly_runtime.csv]

(default: ../shared/traces/philly-runtime/philly_runtime.csv beside the checkout)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "traces" / "philly-runtime" / "philly_runtime.csv"
TARGET = ROOT / "src" / "neocloud" / "data" / "philly_runtime_quantiles.json"
N_QUANTILES = 201
TAIL = [0.991, 0.992, 0.993, 0.994, 0.995, 0.996, 0.997, 0.998, 0.999, 0.9995, 0.9999]


def main(source: Path = DEFAULT_SOURCE) -> None:
    runtimes = np.loadtxt(source, skiprows=1, ndmin=1)
    clipped = np.maximum(runtimes, 1.0)
    probabilities = np.unique(np.round(np.r_[np.linspace(0.0, 1.0, N_QUANTILES), TAIL], 6))
    quantiles = np.quantile(clipped, probabilities)
    table = {
        "source": "alibaba/clusterdata cluster-trace-gpu-v2020/analysis/philly_runtime.csv "
        "(Microsoft Philly 2017 job run times, seconds)",
        "count": int(runtimes.size),
        "zeros_clipped_to_s": 1.0,
        "mean_s": round(float(clipped.mean()), 3),
        "median_s": round(float(np.median(clipped)), 3),
        "probabilities": [round(float(p), 6) for p in probabilities],
        "quantiles_s": [round(float(q), 3) for q in quantiles],
    }
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    lines = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in table.items())
    TARGET.write_text("{\n" + lines + "\n}\n")
    print(f"wrote {TARGET} from {runtimes.size} run times")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE)
