"""Shared pytest configuration: hypothesis profiles.

HYPOTHESIS_PROFILE=ci (default) runs few examples per property, for every commit;
HYPOTHESIS_PROFILE=thorough runs many, for a nightly or pre-release check.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
