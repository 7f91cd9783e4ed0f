"""Guards for the one record per nuke resource type (``_nuke_spec.KINDS``).

Adding a type is one record; these fail when what cannot be derived from it (the module's
static DOCUMENTATION, the IAM policy, the test world, a deleter of its own) was not done.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import yaml
from botocore import xform_name
from botocore.session import get_session

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion import delete as _nuke_delete, detach as _nuke_detach, discover as _nuke_discover
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import KINDS, RESOURCE_TYPES
from ansible_collections.bacalhau.aws_spot.plugins.modules import tagged_resource_nuke
from tests.policy import policy_actions

_spec = importlib.util.spec_from_file_location("nuke_world", Path(__file__).with_name("test_nuke_world.py"))
world = sys.modules.get("nuke_world") or importlib.util.module_from_spec(_spec)
if "nuke_world" not in sys.modules:
    sys.modules["nuke_world"] = world
    _spec.loader.exec_module(world)

EC2 = get_session().get_service_model("ec2")
METHODS = {xform_name(name): name for name in EC2.operation_names}  # describe_vpcs -> DescribeVpcs


def _model(service: str):
    return get_session().get_service_model(service)


def _operation(method: str, service: str = "ec2") -> str:
    if service == "ec2":
        return METHODS[method]
    return {xform_name(name): name for name in _model(service).operation_names}[method]


def test_the_modules_documented_choices_are_the_records_names_in_order():
    options = yaml.safe_load(tagged_resource_nuke.DOCUMENTATION)["options"]
    assert options["resource_types"]["choices"] == list(RESOURCE_TYPES)


def test_every_records_calls_are_ec2_calls_with_those_parameters():
    """(Or calls of the record's service: a type whose service cannot filter by tags lists
    them with a lister of its own, and has no ``Filters``.)"""
    for kind in KINDS:
        model = _model(kind.service)
        for method in (kind.describe, kind.delete):
            operation = model.operation_model(_operation(method, kind.service))
            assert operation.input_shape is not None, (kind.name, method)
        describe = model.operation_model(_operation(kind.describe, kind.service))
        assert ("Filters" in describe.input_shape.members) == (kind.lister is None), kind.name
        assert kind.service == "ec2" or kind.lister is not None, kind.name
        assert kind.result_key in describe.output_shape.members, kind.name
        delete_params = model.operation_model(_operation(kind.delete, kind.service)).input_shape.members
        assert kind.delete_param in delete_params, kind.name
        if kind.by_name:
            assert kind.by_name in delete_params, kind.name
        if kind.waiter:
            assert kind.waiter in get_session().create_client("ec2", region_name="us-east-1").waiter_names


def test_every_records_calls_are_in_the_iam_policy():
    allowed = policy_actions()
    missing = [(kind.name, f"{kind.service}:{_operation(m, kind.service)}") for kind in KINDS
               for m in (kind.describe, kind.delete) if f"{kind.service}:{_operation(m, kind.service)}" not in allowed]
    assert not missing, f"add these to docs/iam-policy.json: {missing}"


def test_every_type_has_a_round_and_a_deleter():
    assert {kind.round for kind in KINDS} <= {"B", "E", "F"}
    assert set(_nuke_delete.DELETERS) <= set(RESOURCE_TYPES)  # a deleter of its own names a known type
    for rounds in (_nuke_delete.ROUND_B, _nuke_delete.ROUND_E, _nuke_delete.ROUND_F):
        for resource_type, deleter in rounds.items():
            assert callable(deleter), resource_type
    assert set(_nuke_delete.DETACH_E) <= set(_nuke_delete.ROUND_F)  # detached in E, deleted in F
    assert set(_nuke_detach.PREPARE) <= set(RESOURCE_TYPES)


def test_the_test_world_builds_every_type():
    """test_every_type_is_in_the_scene builds world.TYPES: it must be the records' types."""
    assert tuple(world.TYPES) == RESOURCE_TYPES


def test_names_are_unique_and_each_describe_is_its_own():
    assert len(set(RESOURCE_TYPES)) == len(KINDS)
    assert len({kind.describe for kind in KINDS}) == len(KINDS)  # one describe each: one round trip
    assert _nuke_discover.DESCRIBE_WORKERS == len(KINDS)


def test_a_record_drives_discovery_and_deletion():
    """A made-up record is described and deleted through its fields alone (no code of its own)."""
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion.spec import Resource, ResourceKind

    kind = ResourceKind("placement_groups", "placement group", "describe_placement_groups", "PlacementGroups",
                        "GroupId", "E", "delete_placement_group", "GroupName", frozenset({"InvalidPlacementGroup.Unknown"}),
                        named_by=("GroupName",), paginated=False, by_name="GroupName")
    calls = []

    class Client:
        def describe_placement_groups(self, Filters, aws_retry):  # noqa: N803 (boto3's spelling)
            calls.append(("describe", Filters))
            return {"PlacementGroups": [{"GroupId": "pg-1", "GroupName": "ours"}]}

        def delete_placement_group(self, **params):
            calls.append(("delete", params))

    items = _nuke_discover.describe(Client(), kind, [{"Name": "tag:x", "Values": ["y"]}])
    assert items == [{"GroupId": "pg-1", "GroupName": "ours"}]
    assert _nuke_discover.item_name(kind, items[0]) == "ours"
    res = Resource(region="us-east-1", type=kind.name, id="pg-1", name="ours", tags={}, raw=items[0])
    ctx = _nuke_delete.RegionContext(client=Client(), region="us-east-1", resources=[res])
    _nuke_delete._unless_used(kind)(ctx, [res])
    assert res.action == "deleted"
    assert calls[-1] == ("delete", {"GroupName": "ours"})


def test_the_event_path_types_say_already_gone_in_the_engines_words():
    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion import events as _nuke_events

    from ansible_collections.bacalhau.aws_spot.plugins.module_utils._deletion import context as _nuke_context

    assert _nuke_events.ALREADY_GONE == _nuke_context.ALREADY_GONE
    assert _nuke_detach.PREPARE["event_rules"] is _nuke_events.remove_rule_targets  # targets go before the rule
