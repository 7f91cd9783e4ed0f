# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find every resource of ours in one region. Private.

Each type is found with its own describe call and our tag filters, as its record
(``_nuke_spec.KINDS``) says, never from ``DescribeTags`` (which also lists tags of
resources that are gone). Every item found is then checked against its own tags again (:meth:`NukeSpec.matches`), so a
filter that AWS (or an emulator) ignores can never make us pick up a foreign
resource. Describes of different types run at once: they are independent.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable, Dict, List

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore for us

from ansible_collections.amazon.aws.plugins.module_utils.tagging import boto3_tag_list_to_ansible_dict
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_code, paginate
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import KIND, KINDS, NukeSpec, Resource, ResourceKind

# What EC2 answers for a filter it does not know.
INVALID_FILTER_CODES = frozenset({"InvalidParameterValue", "InvalidFilter", "InvalidParameter", "InvalidParameterCombination"})

# How many describes of one region run at once.
DESCRIBE_WORKERS = len(KINDS)  # one per resource type: one round trip (each is a different API, throttled apart)
# EC2 accepts at most 200 values per filter.
FILTER_CHUNK = 200

Describe = Callable[[Any, List[Dict[str, Any]]], List[Dict[str, Any]]]


# --------------------------------------------------------------------------- describe calls
def _field(item: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        item = (item or {}).get(key)
    return item


def _listed(client: Any, kind: ResourceKind, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every item of ``kind``'s describe with ``filters`` (paginated or not, as its record says)."""
    if kind.paginated:
        answer = paginate(client, kind.describe, kind.result_key, Filters=filters)
    else:
        answer = getattr(client, kind.describe)(Filters=filters, aws_retry=True).get(kind.result_key, [])
    if kind.within:
        return [item for result in answer for item in result.get(kind.within, [])]
    return answer


def describe(client: Any, kind: ResourceKind, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``kind``'s live resources matching ``filters``: its describe call, as its record says
    (or its lister, for a type whose service cannot filter by tags)."""
    if kind.lister is not None:
        return kind.lister(client, filters)
    if kind.live:
        filter_name, state_field, states = kind.live
        filters = filters + [{"Name": filter_name, "Values": list(states)}]
    try:
        items = _listed(client, kind, filters)
    except botocore.exceptions.ClientError as exc:
        # should EC2 refuse tag filters where it does not document them, list the live ones
        # and let discover_type's own tag check pick ours
        if not kind.tag_filters_optional or error_code(exc) not in INVALID_FILTER_CODES:
            raise
        items = _listed(client, kind, [f for f in filters if not f["Name"].startswith("tag:")])
    if kind.live:
        # the state is checked here too: a filter an implementation ignores must not matter
        items = [item for item in items if _field(item, state_field) in states]
    return items


def describer(resource_type: str) -> Describe:
    """The describe of one type, as ``(client, filters) -> items``."""
    kind = KIND[resource_type]

    def call(client: Any, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return describe(client, kind, filters)

    return call


def describe_by_values(
    describe_call: Describe,
    client: Any,
    name: str,
    values: list[str],
) -> list[dict[str, Any]]:
    """``describe_call`` with one filter ``name`` in ``values``, in chunks EC2 accepts."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(values), FILTER_CHUNK):
        found.extend(describe_call(client, [{"Name": name, "Values": values[start:start + FILTER_CHUNK]}]))
    return found


# --------------------------------------------------------------------------- per type
def item_tags(item: dict[str, Any]) -> dict[str, str]:
    """An item's tags as a dict (network interfaces call them ``TagSet``)."""
    return boto3_tag_list_to_ansible_dict(item.get("Tags") or item.get("TagSet") or [])


def item_name(kind: ResourceKind, item: dict[str, Any]) -> str | None:
    """The first of ``kind.named_by`` that the item has (``tag:KEY`` is a tag)."""
    for source in kind.named_by:
        value = item_tags(item).get(source[4:]) if source.startswith("tag:") else item.get(source)
        if value:
            return value
    return None


def discover_type(client: Any, region: str, spec: NukeSpec, resource_type: str) -> list[Resource]:
    kind = KIND[resource_type]
    found = []
    for item in describe(client, kind, spec.filters):
        tags = item_tags(item)
        if not spec.matches(tags):
            continue  # the filter let something through: never ours to touch
        found.append(Resource(region=region, type=resource_type, id=item[kind.id_key], name=item_name(kind, item),
                              tags=tags, raw=item))
    return found


def goes_with_its_vpc(resource_type: str, item: dict[str, Any]) -> bool:
    """A default security group or a main route table cannot be deleted: it goes with its VPC."""
    rule = KIND[resource_type].goes_with_vpc
    return bool(rule and rule(item))


def discover_region(client: Any, region: str, spec: NukeSpec) -> list[Resource]:
    """Every resource of ours in ``region`` of the wanted types (describes run at once)."""
    found: list[Resource] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=DESCRIBE_WORKERS, thread_name_prefix=f"describe-{region}") as pool:
        futures = [pool.submit(discover_type, client, region, spec, t) for t in spec.resource_types]
        for future in futures:
            found.extend(future.result())  # a describe that fails fails the region
    vpc_ids = {res.id for res in found if res.type == "vpcs"}
    return [res for res in found if not (res.raw.get("VpcId") in vpc_ids and goes_with_its_vpc(res.type, res.raw))]
