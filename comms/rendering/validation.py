"""``validate_values``: every problem with a set of raw values, at once, each naming its field."""

from __future__ import annotations

from collections.abc import Mapping

from comms.errors import FieldProblem, InvalidInput
from comms.rendering.spec import TemplateSpec
from comms.rendering.values import BadValue


def validate_values(spec: TemplateSpec, raw: Mapping[str, str]) -> dict[str, str]:
    """Normalised values (declared order, defaults filled in) or InvalidInput listing all problems.

    An empty or blank value counts as not given. Unknown variables, missing required ones and
    every type error are reported together, so the author fixes the form in one pass.
    """
    problems: list[FieldProblem] = []
    declared = set(spec.variable_names)
    for key in sorted(raw):
        if key not in declared:
            known = ", ".join(spec.variable_names) or "none"
            problems.append(
                FieldProblem(
                    f"variables.{key}",
                    f"unknown variable for template {spec.name!r} (it takes: {known})",
                )
            )
    values: dict[str, str] = {}
    for var in spec.variables:
        given = raw.get(var.name)
        if given is not None and not isinstance(given, str):
            problems.append(FieldProblem(var.field, "must be a string"))
            continue
        if given is None or not given.strip():
            if var.default is not None:
                values[var.name] = var.default
            elif var.required:
                problems.append(FieldProblem(var.field, f"is required ({var.label})"))
            continue
        try:
            values[var.name] = var.normalise(given)
        except BadValue as exc:
            problems.append(FieldProblem(var.field, str(exc)))
    if problems:
        raise InvalidInput(problems)
    return values
