"""Shared pytest configuration: hypothesis profiles.

HYPOTHESIS_PROFILE=ci (default) runs few examples per property with a fixed seed
(``derandomize=True``): every run draws the same examples, so a property test passes or
fails the same way on every machine and every commit, and a counterexample it ever found
is pinned with ``@example`` next to the test.
HYPOTHESIS_PROFILE=thorough runs many random examples, for a nightly or pre-release check;
a failure it finds becomes a new ``@example``.
HYPOTHESIS_PROFILE=mutate (set by ``make mutate``) is ``ci`` without shrinking: a mutant only
needs one failing example, and shrinking through mutmut's trampolines is slow.
"""

import json
import os

from hypothesis import HealthCheck, Phase, settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("mutate", settings.get_profile("ci"),
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.register_profile("thorough", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

if "MUTANT_UNDER_TEST" in os.environ:
    # Under mutmut every mutant runs in a process forked from one that only collected the
    # tests. The first optimizer a test builds imports torch._dynamo (about 6 s of CPU), and
    # a forked process would pay that again for every mutant; import it once before forking.
    import torch._dynamo  # noqa: F401


def pytest_collection_modifyitems(config, items):
    """Under ``make mutate``, run a mutant's tests fastest first.

    mutmut runs each mutant with ``-x`` on the tests that reach its function, in no
    particular order; most mutants are killed by some test, and the quickest one that
    kills it should be the one that runs first. The durations come from mutmut's own
    instrumented run (``mutants/mutmut-stats.json``); tests it did not time go last.
    """
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return
    try:
        with open("mutmut-stats.json") as f:
            durations = json.load(f)["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return
    items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))
