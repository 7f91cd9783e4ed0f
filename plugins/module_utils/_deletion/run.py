# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``tagged_resource_nuke`` end to end: regions, then find and delete in each at once. Private.

:func:`nuke` does the work and returns a :class:`NukeOutcome`; its
:meth:`NukeOutcome.report` turns that into the module's result and says whether
the module fails. Only the module's ``main()`` calls ``exit_json``/``fail_json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import (
    enabled_region_names,
    error_text,
    region_client,
    run_per_region,
)
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.context import ALREADY_GONE
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.delete import delete_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.discover import discover_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import (
    ACTION_DELETED,
    ACTION_FAILED,
    ACTION_WOULD_DELETE,
    NukeSpec,
    Resource,
    sort_key,
    summarise,
)

DEFAULT_REGION = "us-east-1"
PROCEED_HINT = "re-run with force: true to delete them (playbook: ansible-playbook playbooks/nuke.yml -e force=true)"
MAX_LISTED = 30


def enabled_regions(module: Any) -> list[str]:
    """Every region enabled for the account (``DescribeRegions`` without opt-in regions not opted in)."""
    return enabled_region_names(region_client(module, "ec2", module.region or DEFAULT_REGION))


def region_clients(module: Any, regions: list[str]) -> tuple[dict[str, Any], dict[str, BaseException]]:
    """An EC2 client per region, made one after the other; ``(clients, errors)`` by region."""
    clients: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    for region in regions:
        try:
            clients[region] = region_client(module, "ec2", region)
        except Exception as exc:  # pylint: disable=broad-except
            errors[region] = exc
    return clients, errors


@dataclass
class NukeOutcome:
    spec: NukeSpec
    regions: list[str]
    deleting: bool
    check_mode: bool
    resources: list[Resource] = field(default_factory=list)
    region_errors: dict[str, str] = field(default_factory=dict)

    # -- what happened
    def _with(self, action: str) -> list[Resource]:
        return [res for res in self.resources if res.action == action]

    @property
    def changed(self) -> bool:
        if self.deleting:
            return any(res.action == ACTION_DELETED and res.note != ALREADY_GONE for res in self.resources)
        return self.check_mode and bool(self._with(ACTION_WOULD_DELETE))

    @staticmethod
    def _listing(resources: list[Resource], with_error: bool = False) -> str:
        lines = []
        for res in resources[:MAX_LISTED]:
            label = f"{res.region} {res.type} {res.id}" + (f" ({res.name})" if res.name else "")
            if with_error and res.error:
                label += f": {res.error}"
            lines.append(label)
        if len(resources) > MAX_LISTED:
            lines.append(f"... and {len(resources) - MAX_LISTED} more (see resources)")
        return "; ".join(lines)

    def _scope(self) -> str:
        who = f"cluster {self.spec.cluster_name!r}" if self.spec.cluster_name else "every cluster"
        return f"{who} in {len(self.regions)} region(s)"

    def report(self) -> tuple[bool, dict[str, Any]]:
        """``(failed, result)`` for ``exit_json``/``fail_json``."""
        result: dict[str, Any] = {
            "changed": self.changed,
            "resources": [res.as_result() for res in self.resources],
            "counts": summarise(self.resources),
            "regions": self.regions,
            "region_errors": self.region_errors,
        }
        failed = False
        parts: list[str] = []
        if self.region_errors:
            failed = True
            parts.append(
                "could not finish in "
                + "; ".join(f"{region}: {err}" for region, err in sorted(self.region_errors.items()))
                + " (fix access to those regions, or leave them out with regions, and run again)"
            )
        would = self._with(ACTION_WOULD_DELETE)
        failures = self._with(ACTION_FAILED)
        deleted = self._with(ACTION_DELETED)
        if self.deleting:
            if failures:
                failed = True
                parts.append(
                    f"deleted {len(deleted)}, but {len(failures)} resource(s) remain: "
                    + self._listing(failures, with_error=True)
                    + ". Fix what the errors name and run again: what is gone stays gone"
                )
            else:
                parts.append(f"deleted {len(deleted)} resource(s) of {self._scope()}" if deleted
                             else f"nothing of ours to delete for {self._scope()}")
        elif would:
            listing = self._listing(would)
            if self.check_mode:
                parts.append(f"would delete {len(would)} resource(s) of {self._scope()}: {listing}")
            else:
                failed = True
                parts.append(
                    f"{len(would)} resource(s) of {self._scope()} would be deleted, and nothing was: {listing}. "
                    + PROCEED_HINT
                )
        else:
            parts.append(f"nothing of ours to delete for {self._scope()}")
        result["msg"] = ". ".join(parts)
        return failed, result


def nuke(module: Any, spec: NukeSpec, check_mode: bool) -> NukeOutcome:
    """Find (and with ``force`` outside check mode, delete) our resources in every region."""
    regions = spec.regions or enabled_regions(module)
    deleting = spec.force and not check_mode
    outcome = NukeOutcome(spec=spec, regions=regions, deleting=deleting, check_mode=check_mode)

    # every region's client first, here: making one takes CPU (tens of milliseconds),
    # which would spread over several round trips calls meant to go out together
    clients, client_errors = region_clients(module, regions)

    def work(region: str) -> list[Resource]:
        client = clients[region]
        found = discover_region(client, region, spec)
        if deleting and found:
            try:
                delete_region(client, region, found)
            except Exception as exc:  # pylint: disable=broad-except
                # never lose what was found: what is not done yet is reported failed
                for res in found:
                    if res.action == ACTION_WOULD_DELETE:
                        res.failed(f"not attempted: {error_text(exc)}")
        return found

    results, errors = run_per_region([region for region in regions if region in clients], work)
    errors.update(client_errors)
    for region in regions:
        outcome.resources.extend(results.get(region, []))
    outcome.resources.sort(key=sort_key)
    outcome.region_errors = {region: error_text(exc) for region, exc in errors.items()}
    return outcome
