"""Shared test configuration.

Hypothesis profiles: ``ci`` (the default; few examples, no deadline, no
shrinking, so the whole suite stays within a few minutes on two cores) and
``thorough`` for local runs (``HYPOTHESIS_PROFILE=thorough pytest``), which
also shrinks failures to minimal examples.
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
    derandomize=True,
    # No shrinking: a failure is reported at once with the example that hit it,
    # so a red run cannot spend many minutes minimising a slow model test.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
