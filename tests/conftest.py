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

import os

from hypothesis import HealthCheck, Phase, settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("mutate", settings.get_profile("ci"),
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.register_profile("thorough", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
