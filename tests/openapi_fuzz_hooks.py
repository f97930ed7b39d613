"""Schemathesis hooks for the fuzz tests of a service's /openapi.json (loaded with SCHEMATHESIS_HOOKS).

Two of schemathesis's checks get one precise exception each, for an answer the schema documents but cannot
express as a constraint; anything else they would flag is still flagged:

- positive_data_acceptance: a schema-valid row of finite numbers may still overflow a stage (1e308 scaled
  is infinity); the service answers 422 naming the range, which is a client error, not a refusal of valid
  data.
- negative_data_rejection: more rows than maxItems (rest.max_instances) is answered 413 naming the limit,
  as documented, where the check expects 400 or 422.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.specs.openapi import checks

OVERFLOW = "out of the range this pipeline can compute"
TOO_MANY = "more than rest.max_instances"


def _error(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return body.get("error", "") if isinstance(body, dict) else ""


@schemathesis.check
def positive_data_acceptance_but_overflow(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code == 422 and OVERFLOW in _error(response):
        return None
    return checks.positive_data_acceptance(ctx, response, case)


@schemathesis.check
def negative_data_rejection_or_too_many(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code == 413 and TOO_MANY in _error(response):
        return None
    return checks.negative_data_rejection(ctx, response, case)
