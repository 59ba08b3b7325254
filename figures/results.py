"""Reading the results files of ``python -m snl_train.experiments`` (no matplotlib here).

:func:`read_results` reads ``DATA_DIR/<experiment>.json`` for each experiment present, with
the bounded reader of :mod:`capacity.cli` (size, nesting, digits, UTF-8), so a bad file is
reported before anything is drawn.

Example::

    >>> read_results("figures/data")["capacity"]["experiment"]
    'capacity'
"""
from __future__ import annotations

import os
from pathlib import Path

from capacity.cli import UsageError, read_json

#: Results files read: one per experiment (retention_recipes: the recipe / lambda retention rows;
#: private: the measurements of benchmarks/private.py; latency: accuracy against measured
#: private-inference latency).
EXPERIMENTS = ("retention", "retention_recipes", "capacity", "distribution", "pareto", "allocation",
               "private", "latency")
#: The list every results file holds: its runs (private.json: the measured networks).
RUNS_KEY = {"private": "networks"}
#: Largest results file read (the committed ones are well under 1 MB).
MAX_RESULTS_BYTES = 64 << 20


class ResultsError(ValueError):
    """A results file that cannot be read or plotted."""


def read_results(data_dir: str | os.PathLike) -> dict[str, dict]:
    """The results document of every experiment whose file exists in ``data_dir``.

    Raises:
        ResultsError: a results path that is not a readable file, is not JSON within the
            reader's bounds, or is not an object with a list of runs.
    """
    docs = {}
    for experiment in EXPERIMENTS:
        source = Path(data_dir) / f"{experiment}.json"
        if not os.path.lexists(source):
            continue
        try:
            doc = read_json(source, "results file", max_bytes=MAX_RESULTS_BYTES, allow_nan=True)
        except UsageError as exc:
            raise ResultsError(str(exc)) from None
        key = RUNS_KEY.get(experiment, "runs")
        if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
            maker = ("benchmarks/private.py" if experiment == "private"
                     else f"python -m snl_train.experiments {experiment}")
            raise ResultsError(f"{source} is not a results file of {maker} (expected an object "
                               f"with a list of {key})")
        docs[experiment] = doc
    return docs
