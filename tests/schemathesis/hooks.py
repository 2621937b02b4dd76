"""Schemathesis hooks for runyard (loaded with SCHEMATHESIS_HOOKS=hooks).

`positive_data_acceptance_or_stated`: schemathesis's positive-data check, except that
a schema-valid request may be refused with a problem (400 or 422) whose detail names a
field the document lists under `x-stated-elsewhere`: a rule JSON Schema cannot say
(between fields, or a fact of the server's, e.g. a data file that does not exist).
Every other refusal of a schema-valid request still fails the run.
"""

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance


def _stated_elsewhere(case, response) -> bool:
    if response.status_code not in (400, 422):
        return False
    try:
        detail = response.json().get("detail", "")
    except Exception:  # not a problem body: the built-in check decides
        return False
    field = detail.split(":", 1)[0].strip()
    stated = case.operation.schema.raw_schema.get("x-stated-elsewhere", [])
    return any(
        field == entry["field"]
        or field.startswith(entry["field"] + ".")
        or field.startswith(entry["field"] + "[")
        for entry in stated
    )


@schemathesis.check
def positive_data_acceptance_or_stated(ctx, response, case):
    if _stated_elsewhere(case, response):
        return None
    return positive_data_acceptance(ctx, response, case)
