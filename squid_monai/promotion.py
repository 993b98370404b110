"""Which alias a newly registered model version gets: the champion alias moves only to a
version whose validation metric is at least the champion's; any other new version becomes
the challenger. A model team then serves ``models:/<name>@champion`` without a worse model
ever replacing a better one by accident, and the reason is kept with the version and the run.

The metric travels as two model version tags (:data:`METRIC_NAME_TAG`,
:data:`METRIC_VALUE_TAG`) so that the gate reads it from the registry alone, whichever
process registered the champion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["METRIC_NAME_TAG", "METRIC_VALUE_TAG", "Promotion", "decide", "metric_tags", "promote"]

#: version tag: the name of the validation metric the gate compares (e.g. ``val_auc_smoothed``)
METRIC_NAME_TAG = "validation_metric"
#: version tag: its value, higher = better
METRIC_VALUE_TAG = "validation_metric_value"
#: version and run tags that record the decision
ALIAS_TAG, REASON_TAG = "promotion", "promotion_reason"


@dataclass(frozen=True)
class Promotion:
    """The alias a version received and why (a sentence a reviewer can read)."""

    alias: str
    reason: str


def metric_tags(metric: tuple[str, float] | None) -> dict[str, str]:
    """The version tags of a validation metric ``(name, value)`` (none for None)."""
    if metric is None:
        return {}
    name, value = metric
    return {METRIC_NAME_TAG: str(name), METRIC_VALUE_TAG: f"{float(value):.9g}"}


def _recorded(tags: dict) -> tuple[str, float] | None:
    try:
        name, value = tags[METRIC_NAME_TAG], float(tags[METRIC_VALUE_TAG])
    except (KeyError, ValueError):
        return None
    return None if math.isnan(value) else (name, value)


def _champion(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:  # no such alias (or model) yet
        return None


def decide(
    client,
    name: str,
    version: str,
    metric: tuple[str, float] | None,
    champion: str = "champion",
    challenger: str = "challenger",
) -> Promotion:
    """The alias for ``version`` of registered model ``name`` given its validation
    ``metric`` ``(name, value)``, higher = better (see the module docstring)."""
    current = _champion(client, name, champion)
    if current is None or str(current.version) == str(version):
        return Promotion(champion, f"version {version} is the first {champion} of {name!r}")
    if metric is not None and math.isnan(float(metric[1])):
        metric = None
    theirs = _recorded(current.tags or {})
    here = f"{champion} version {current.version}"
    if metric is None:
        return Promotion(
            challenger,
            f"version {version} has no validation metric to compare with {here}'s; {here} stays",
        )
    key, value = metric[0], float(metric[1])
    if theirs is None:
        return Promotion(
            challenger,
            f"{here} records no validation metric, so version {version} "
            f"({key} {value:.6g}) cannot be compared; {here} stays (move the alias "
            "by hand to promote)",
        )
    if theirs[0] != key:
        return Promotion(
            challenger,
            f"version {version} reports {key}, {here} {theirs[0]}: not comparable; {here} stays",
        )
    if value >= theirs[1]:
        return Promotion(champion, f"{key} {value:.6g} >= {theirs[1]:.6g} of {here}")
    return Promotion(challenger, f"{key} {value:.6g} < {theirs[1]:.6g} of {here}; {here} stays")


def promote(
    client,
    name: str,
    version: str,
    metric: tuple[str, float] | None,
    run_id: str | None = None,
    champion: str = "champion",
    challenger: str = "challenger",
) -> Promotion:
    """:func:`decide`, then point the chosen alias at ``version`` and record the decision as
    tags of the version and of run ``run_id``."""
    decision = decide(client, name, version, metric, champion, challenger)
    client.set_registered_model_alias(name, decision.alias, version)
    for key, value in ((ALIAS_TAG, decision.alias), (REASON_TAG, decision.reason)):
        client.set_model_version_tag(name, version, key, value)
        if run_id is not None:
            client.set_tag(run_id, key, value)
    return decision
