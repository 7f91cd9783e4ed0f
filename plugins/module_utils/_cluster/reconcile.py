# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One reconcile of the whole cluster: both roles, every region, one plan, one apply. Private.

``spot_cluster`` with ``orchestrator`` (the cluster file's terms, ``_cluster.desc``):

1. plan, read only, every region at once (one round of reads per region; the roles of a
   region share its instances and network, ``region_plan.Clients.shared``): the counts of the
   ``mode`` (``converge``: the file's; ``heal``: replacements for the draining nodes, never
   fewer than live; ``release``: the drained and the spare overflow go, ``_cluster.counts``),
   the NATS rule (the compute nodes outside the orchestrator's region as /32 plus
   ``nats_cidrs``, compared with the security group's rules as AWS has them), placement,
   and the caps over the whole cluster. Any problem stops here, named as the file names it.
2. apply, every region at once (a region both roles use: its network once, then both
   launches together); with ``heal``, what the home regions still lack goes to the overflow
   regions in order; last, the NATS rule again if launches changed the addresses.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import region_opt_in
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import run_per_region
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import together
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.credentials import credential_problem
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import counts
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import apply as region_apply
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import place as region_place
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import plan as region_plan
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import result as region_result
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.result import OVERFLOW_KEY
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.result import cluster_summary
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.result import why
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import instances as inst
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import build
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import learning
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster import network
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.desc import LEAD
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.desc import ClusterDesc
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._cluster.spec import ClusterSpec
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import cost as pricing_caps
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import reads as capacity_reads
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement import rebalance
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._pricing import cost_report
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._placement.pools import pool_price as capacity_pool_price
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._events import cluster as cluster_events
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._events import path as event_path

ROLES = ("orchestrator", "compute")


@dataclasses.dataclass
class Cluster:
    """The two roles' specs and every region's plans, ``plans[region][role]``."""

    desc: ClusterDesc
    specs: dict[str, ClusterSpec]
    plans: dict[str, dict[str, region_plan.RegionPlan]] = dataclasses.field(default_factory=dict)
    scores: dict[str, Any] = dataclasses.field(default_factory=dict)
    nats: list[str] = dataclasses.field(default_factory=list)
    check_mode: bool = False
    learn: Any = None  # _cluster.learning.Learning: the pool history of this run
    moves: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)  # cluster_rebalance's plan
    moving_out: dict[str, set] = dataclasses.field(default_factory=dict)  # region -> pools nodes move out of

    def each(self):
        """(region, role, spec, plan), the orchestrator first, then the compute regions in the file's order."""
        for role in ROLES:
            spec = self.specs.get(role)
            for entry in spec.regions if spec else []:
                plan = self.plans.get(entry.region, {}).get(role)
                if plan is not None:
                    yield entry.region, role, spec, plan


def _specs(desc: ClusterDesc) -> dict[str, ClusterSpec]:
    specs = {"compute": dataclasses.replace(desc.compute, regions=desc.compute.regions + desc.overflow,
                                            drain_instance_ids=sorted(desc.drain))}
    if desc.orchestrator is not None:
        specs["orchestrator"] = dataclasses.replace(desc.orchestrator, drain_instance_ids=[])
    return specs


def _fail(desc: ClusterDesc, errors: dict[str, BaseException]) -> None:
    """Refuse the plan, every region's problem in the file's words."""
    if not errors:
        return
    for exc in errors.values():
        if credential_problem(exc):
            raise exc
    parts = [exc.message if isinstance(exc, AwsSpotError) and exc.region is None else
             f"{desc.where(region)}: {exc.message if isinstance(exc, AwsSpotError) else error_text(exc)}"
             for region, exc in errors.items()]
    raise AwsSpotError(LEAD + "; ".join(parts), details={"problems": parts})


def _region_problems(desc: ClusterDesc, ec2: Any, names: list[str]) -> dict[str, BaseException]:
    known = region_opt_in(ec2)
    out: dict[str, BaseException] = {}
    for name in names:
        where = desc.where(name, "orchestrator" if name == desc.orchestrator_region and name not in desc.home
                           else "compute")
        if name not in known:
            out[name] = AwsSpotError(f"{where}: unknown region {name}")
        elif known[name] == "not-opted-in":
            out[name] = AwsSpotError(f"{where}: region {name} is not enabled for this account (enable it under "
                                     "Account > AWS Regions, or leave it out)")
    return out


def _plan_region(cluster: Cluster, region: str, clients: region_plan.Clients) -> dict[str, region_plan.RegionPlan]:
    roles = [(role, spec, entry) for role, spec in cluster.specs.items() for entry in spec.regions
             if entry.region == region]
    answers = together(*[functools.partial(_plan_role, cluster.desc, spec, entry, clients, role)
                         for role, spec, entry in roles])
    problems = [a for a in answers if isinstance(a, str)]
    if problems:
        raise AwsSpotError("; ".join(problems))
    return {role: plan for (role, _spec, _entry), plan in zip(roles, answers)}


def _plan_role(desc: ClusterDesc, spec: ClusterSpec, entry: Any, clients: region_plan.Clients, role: str) -> Any:
    try:
        return region_plan.plan_present(spec, entry, clients)
    except AwsSpotError as exc:
        return f"{desc.where(entry.region, role)}: {exc.message}"


def _read(module: Any, cluster: Cluster) -> None:
    """Every region's plan (one round of reads) and the placement scores, with the region check."""
    desc = cluster.desc
    names = list(dict.fromkeys(entry.region for spec in cluster.specs.values() for entry in spec.regions))
    ec2 = region_plan.default_client(module)
    alongside = region_plan.known_locally(module, names)
    if not alongside:
        _fail(desc, _region_problems(desc, ec2, names))
    clients = {name: region_plan.Clients(module, name).ready(ssm=True) for name in names}
    groups = [g for spec in cluster.specs.values() for g in region_plan.score_groups(spec)]
    bad, (plans, errors), scores = together(
        (lambda: _region_problems(desc, ec2, names)) if alongside else (lambda: {}),
        lambda: run_per_region(names, lambda r: _plan_region(cluster, r, clients[r])),
        lambda: capacity_reads.placement_scores(ec2, groups))
    _fail(desc, bad or errors)
    cluster.plans, cluster.scores = plans, scores


def views(cluster: Cluster, role: str = "compute") -> list[dict[str, Any]]:
    """The live instances of a role the plans read, as instance views."""
    out, seen = [], set()
    for region, plans in cluster.plans.items():
        for plan in plans.values():
            for i in plan.reads.instances:
                if inst.role_of(i) == role and inst.is_live(i) and i["InstanceId"] not in seen:
                    seen.add(i["InstanceId"])
                    out.append(inst.view(i, region, plan.reads.architectures))
    return out


def _counts(cluster: Cluster) -> dict[tuple[str, str], int]:
    """(region, role) -> the count the mode asks for."""
    desc = cluster.desc
    now = views(cluster)
    live = {(v["region"], v["role"]): 0 for v in now}
    for v in now + views(cluster, "orchestrator"):
        live[(v["region"], v["role"])] = live.get((v["region"], v["role"]), 0) + 1
    overflow = [r.region for r in desc.overflow]
    out = {}
    if desc.orchestrator is not None:
        region = desc.orchestrator_region
        out[(region, "orchestrator")] = 1 if desc.mode == "converge" else live.get((region, "orchestrator"), 0)
    if desc.mode == "heal":
        home = counts.grow(desc.home, now, desc.drain)
    elif desc.mode == "release":
        home = counts.final(desc.home, overflow, now, desc.drain)
    else:
        home = dict(desc.home)
    for region in list(desc.home) + overflow:
        out[(region, "compute")] = home.get(region, live.get((region, "compute"), 0))
    return out


def nats_rule(desc: ClusterDesc, compute: list[dict[str, Any]]) -> list[str]:
    """Who may reach the orchestrator's NATS port: ``nats_cidrs`` and every compute node outside
    the orchestrator's region (they dial its public address) as a /32, unless a block of
    ``nats_cidrs`` holds it already (each rule counts against the group's quota)."""
    outside = {f"{v['public_ip']}/32" for v in compute
               if v.get("public_ip") and v.get("region") != desc.orchestrator_region and v.get("state") in inst.LIVE_STATES}
    blocks = list(desc.compute.nats_cidrs)
    return sorted(set(blocks) | {a for a in outside if not network.covered(a, blocks)})


def _staying(cluster: Cluster) -> list[dict[str, Any]]:
    doomed = {i["InstanceId"] for _r, _role, _s, plan in cluster.each() for i in plan.to_terminate}
    return [v for v in views(cluster) if v["instance_id"] not in doomed]


def _set_nats(cluster: Cluster, cidrs: list[str]) -> None:
    """The NATS rule of the orchestrator's region, for both roles (they share its security group)."""
    cluster.nats = cidrs
    region = cluster.desc.orchestrator_region
    if region is None:
        return
    for role, spec in cluster.specs.items():
        for entry in spec.regions:
            if entry.region == region:
                entry.nats_cidrs = list(cidrs)
                plan = cluster.plans.get(region, {}).get(role)
                if plan is not None and (entry.count > 0 or plan.reads.net.vpc):
                    plan.network_changes = network.pending_changes(spec, plan.reads.net)


def _learn(cluster: Cluster) -> None:
    """The pool history of this run: what every region's read saw (any state), at EC2's time; and
    each plan told before our own terminations."""
    seen: dict[str, list[dict[str, Any]]] = {}
    answered = []
    for region, plans in cluster.plans.items():
        for plan_ in plans.values():
            seen[region] = plan_.reads.seen
            answered.append(plan_.reads.answered_at)
            plan_.release = cluster.learn.release
    cluster.learn.observe(seen, answered)
    desc = cluster.desc
    cluster.learn.warned_of(seen, desc.drain & set(desc.compute.interrupted_instance_ids))


def _rebalance(module: Any, cluster: Cluster) -> bool:
    """heal with cluster_rebalance: which spot compute nodes move to a cheaper pool that holds
    (``_placement.rebalance``: never into a cooling pool, never a busy node unless move_busy,
    hysteresis by the pools' mean prices). A moved node drains: heal launches its replacement,
    the release call terminates it once the replacement runs (make before break)."""
    desc, learn = cluster.desc, cluster.learn
    nodes: dict[str, list[rebalance.Node]] = {}
    for region, plans in cluster.plans.items():
        plan_ = plans.get("compute")
        if plan_ is None or not plan_.placement.ranked:
            continue
        for i in plan_.in_scope:
            if i["InstanceId"] in desc.drain or i.get("State", {}).get("Name") != "running":
                continue
            key = (i.get("InstanceType"), i.get("Placement", {}).get("AvailabilityZone"))
            nodes.setdefault(region, []).append(rebalance.Node(
                instance_id=i["InstanceId"], region=region, zone=key[1], instance_type=key[0],
                launch_time=i.get("LaunchTime"), price=(plan_.reads.prices or {}).get(key),
                busy=i["InstanceId"] in desc.busy, market="spot" if i.get("InstanceLifecycle") == "spot" else "on-demand",
                zone_score=plan_.placement.zone_scores.get(key[1])))
    if not nodes:
        return False
    types = {r: [p.pool.instance_type for p in cluster.plans[r]["compute"].placement.ranked] for r in nodes}
    means, errors = cost_report.read_mean_prices({r: cluster.plans[r]["compute"].clients.ec2 for r in nodes}, types,
                                                 learn.now)
    for region, exc in errors.items():
        module.warn(f"cluster_rebalance: no price history in {region} ({error_text(exc)}); nothing moves there this run")
    moved: list[str] = []
    for region, found in nodes.items():
        plan_ = cluster.plans[region]["compute"]
        if region in errors:
            continue
        decided = rebalance.plan(found, plan_.placement.ranked, learn.history, learn.now, mean_prices=means,
                                 **desc.rebalance)
        cluster.moves.setdefault("moves", []).extend(m.as_dict() for m in decided.moves)
        cluster.moves.setdefault("kept", []).extend(dict(k, region=region) for k in decided.kept)
        for move in decided.moves:
            moved.append(move.instance_id)
            cluster.moving_out.setdefault(region, set()).add(move.source)
    if not moved:
        return False
    desc.drain |= set(moved)
    cluster.specs["compute"].drain_instance_ids = sorted(desc.drain)
    if not cluster.check_mode:
        learn.release(moved, rebalance.MOVED)  # before any termination: a killed run still knows they were ours
    return True


def _plan_worst(cluster: Cluster) -> float:
    return sum(region_place.cost_of(spec, plan_, own=True)["worst_case"] for _r, _role, spec, plan_ in cluster.each())


def _fit_cap(cluster: Cluster) -> None:
    """cluster_max_hourly_cost when choosing pools: while the plan's worst case breaks the cap, the
    dearest pool a launch could use is left out, as long as a cheaper one stays in its region."""
    cap = cluster.desc.max_hourly_cost
    if cap is None:
        return
    for _round in range(200):  # bounded: each round leaves one pool out
        if _plan_worst(cluster) <= cap:
            return
        dearest = None
        for _region, _role, spec, plan_ in cluster.each():
            if not plan_.placement.launches or len(plan_.placement.pools) < 2:
                continue
            market = "on-demand" if spec.market == "on-demand" else "spot"
            priced = [(capacity_pool_price(p, market), p) for p in plan_.placement.pools]
            priced = [(price, p) for price, p in priced if price is not None]
            if len(priced) < 2:
                continue
            price, pool = max(priced, key=lambda pp: pp[0])
            if price > min(pp[0] for pp in priced) and (dearest is None or price > dearest[0]):
                dearest = (price, pool, plan_)
        if dearest is None:
            return
        price, pool, plan_ = dearest
        learning.leave_out(plan_.placement, (pool.region, pool.zone, pool.instance_type),
                           f"at {price:.4f} USD/h it would break cluster_max_hourly_cost {cap:g} while a cheaper "
                           "pool holds")
        plan_.placement.notes.append(f"{pool.instance_type}/{pool.zone} left out: at {price:.4f} USD/h it would "
                                     f"break cluster_max_hourly_cost {cap:g}")


def _limits(cluster: Cluster) -> dict[str, Any]:
    """cluster_max_nodes and cluster_max_hourly_cost over both roles, before anything is created."""
    desc = cluster.desc
    _fit_cap(cluster)
    parts: dict[str, int] = {}
    expected = worst = 0.0
    unknown = 0
    for region, role, spec, plan in cluster.each():
        parts[f"{region} {role}"] = len(plan.in_scope) - len(plan.to_terminate) + plan.to_launch
        plan.placement.cost = region_place.cost_of(spec, plan, own=True)
        plan.placement.cost["role"] = dict(plan.placement.cost)
        expected += plan.placement.cost["expected"]
        worst += plan.placement.cost["worst_case"]
        unknown += plan.placement.cost["unknown"]
    costs = {"expected": round(expected, 6), "worst_case": round(worst, 6), "unknown": unknown,
             "max_hourly_cost": desc.max_hourly_cost}
    problems = []
    total = sum(parts.values())
    refusal = pricing_caps.over_max_nodes(total, desc.max_nodes, parts)
    if refusal and desc.mode == "converge":  # a heal's replacements run beside what they replace for a while
        problems.append(refusal.replace("max_nodes", "cluster_max_nodes").replace("; nothing was created", ""))
    refusal = pricing_caps.over_cap(costs, desc.max_hourly_cost, f"cluster {desc.compute.cluster_name}")
    if refusal:
        detail = ", ".join(f"{region} {role}: up to {plan.placement.cost['worst_case']:.4f}"
                           for region, role, _spec, plan in cluster.each())
        problems.append(f"{refusal.replace('max_hourly_cost', 'cluster_max_hourly_cost')} (by region: {detail})")
    if problems:
        raise AwsSpotError(LEAD + "; ".join(problems), details={"plan_cost": costs, "problems": problems})
    return costs


def _refuse_to_heal_nothing(module: Any, cluster: Cluster) -> None:
    """heal mends a cluster create.yml made; with no VPC and no instance of the cluster in any of its
    regions (never made, or destroyed: a heal from cron or the autoheal rulebook after destroy.yml)
    it would build one without its orchestrator. Refuse, before anything is made; in check mode
    (status.yml's plan, heal.yml --check), which makes nothing, say so as a warning."""
    plans = [plan_ for _region, _role, _spec, plan_ in cluster.each()]
    if any(plan_.reads.net.vpc or plan_.in_scope for plan_ in plans):
        return
    name = cluster.desc.compute.cluster_name
    text = (f"cluster {name} does not exist: no VPC or instance of it in any of its regions (never created, or "
            f"destroyed). heal mends a cluster, it does not make one: run create.yml to make it; if the autoheal "
            f"rulebook runs for it, stop it.")
    if module.check_mode:
        module.warn(text)
        return
    raise AwsSpotError(text + " Nothing was created.")


def plan(module: Any, desc: ClusterDesc) -> Cluster:
    """Read, count, place and check the whole cluster; nothing is changed."""
    cluster = Cluster(desc=desc, specs=_specs(desc), check_mode=bool(module.check_mode))
    _read(module, cluster)
    cluster.learn = learning.Learning(desc.compute.cluster_name, enabled=desc.pool_history,
                                      cooldown=desc.pool_cooldown, check_mode=bool(module.check_mode),
                                      warn=module.warn)
    _learn(cluster)
    if desc.mode == "heal":
        _refuse_to_heal_nothing(module, cluster)
    for (region, role), count in _counts(cluster).items():
        plan_ = cluster.plans.get(region, {}).get(role)
        if plan_ is not None:
            region_plan.recount(cluster.specs[role], plan_, count)
    if desc.orchestrator is not None:
        _set_nats(cluster, nats_rule(desc, _staying(cluster)))
    for role, spec in cluster.specs.items():
        region_place.price_on_demand(module, spec, {r: p[role] for r, p in cluster.plans.items() if role in p})
    errors: dict[str, BaseException] = {}
    for region, role, spec, plan_ in cluster.each():
        try:
            region_place.place(spec, plan_, cluster.scores, learn=cluster.learn)
        except AwsSpotError as exc:
            errors[region] = AwsSpotError(f"{desc.where(region, role)}: {exc.message}")
    _fail(desc, errors)
    if desc.mode == "heal" and desc.rebalance is not None and _rebalance(module, cluster):
        for (region, role), count in _counts(cluster).items():  # the moved nodes drain: their replacements come first
            plan_ = cluster.plans.get(region, {}).get(role)
            if plan_ is not None and role == "compute":
                region_plan.recount(cluster.specs[role], plan_, count)
                region_place.place(cluster.specs[role], plan_, cluster.scores, learn=cluster.learn)
                for source in cluster.moving_out.get(region, set()):
                    learning.leave_out(plan_.placement, source, "a node is moved out of it this run (cluster_rebalance)")
    if cluster.scores.get("errors"):
        for _region, _role, _spec, plan_ in cluster.each():
            plan_.placement.notes.append("spot placement scores unavailable (" + "; ".join(cluster.scores["errors"])[:300] + ")")
    cluster.scores["plan_cost"] = _limits(cluster)
    return cluster


# --------------------------------------------------------------------------- apply
def _apply_region(cluster: Cluster, region: str) -> dict[str, dict[str, Any]]:
    """Both roles of a region: its network once, then their launches together."""
    roles = [(role, cluster.specs[role], p) for role, p in cluster.plans[region].items()]
    if len(roles) == 1:
        role, spec, plan_ = roles[0]
        return {role: region_apply.apply_present(spec, plan_)}
    changes = list(dict.fromkeys(c for _role, _spec, p in roles for c in p.network_changes))
    finish = None
    first_role, first_spec, first = roles[0]
    try:
        if changes:
            finish = build.prepare(first.clients.ec2, first_spec, first.reads.net)
    except Exception as exc:  # pylint: disable=broad-except
        out = {}
        for role, spec, plan_ in roles:
            out[role] = region_result.region_result(spec, plan_)
            out[role].update(failed=True, error=exc.message if isinstance(exc, AwsSpotError) else error_text(exc),
                             exception=exc, instances=[inst.view(i, region, plan_.reads.architectures) for i in plan_.in_scope])
        return out
    for _role, _spec, plan_ in roles:
        plan_.network_changes = []
    answers = together(finish, *[functools.partial(region_apply.apply_present, spec, p) for _role, spec, p in roles])
    out = {role: answer for (role, _spec, _p), answer in zip(roles, answers[1:] if finish else answers)}
    if changes:
        out[first_role].update(network_changes=changes, changed=True)
    return out


def _overflow(cluster: Cluster, results: dict[tuple[str, str], dict[str, Any]]) -> None:
    """heal: what the home regions still lack goes to the overflow regions, in order."""
    desc = cluster.desc
    spec = cluster.specs["compute"]
    names = [r.region for r in desc.overflow]
    for index, name in enumerate(names):
        now = [v for res in results.values() for v in res.get("instances", []) if v.get("role") == "compute"]
        want = counts.overflow(desc.home, names, index, now, desc.drain)
        plan_ = cluster.plans[name]["compute"]
        if want <= len(plan_.in_scope):
            continue
        short = ",".join(counts.short_regions(desc.home, now, desc.drain))
        tagged = dataclasses.replace(spec, instance_tags={**spec.instance_tags, OVERFLOW_KEY: short})
        region_plan.recount(tagged, plan_, want)
        region_place.place(tagged, plan_, cluster.scores, learn=cluster.learn)
        result = region_apply.apply_present(tagged, plan_)
        result["reasons"] = why(desc, "compute", plan_, overflow_for=short)
        results[(name, "compute")] = result


def _sync_nats(cluster: Cluster, results: dict[tuple[str, str], dict[str, Any]]) -> None:
    """The NATS rule again when the run changed the compute nodes' addresses (against the rules as they are now)."""
    desc = cluster.desc
    region = desc.orchestrator_region
    plans = cluster.plans.get(region or "", {})
    if not plans:
        return
    compute = [v for res in results.values() for v in res.get("instances", []) if v.get("role") == "compute"]
    cidrs = nats_rule(desc, compute)
    if cidrs == cluster.nats:
        return
    _set_nats(cluster, cidrs)
    role = "orchestrator" if "orchestrator" in plans else "compute"
    plan_ = plans[role]
    result = results.get((region, role))
    if result is None or not plan_.reads.net.security_group:
        return
    try:
        build.prepare(plan_.clients.ec2, cluster.specs[role], plan_.reads.net)()
        result["network_changes"] = list(result.get("network_changes") or []) + ["update the NATS rule"]
        result["changed"] = True
    except Exception as exc:  # pylint: disable=broad-except
        result.update(failed=True, error=f"the NATS rule could not be updated: {error_text(exc)}; run again",
                      exception=exc)


def apply(module: Any, cluster: Cluster) -> dict[str, Any]:
    """Act on every region (or, in check mode, say what would be done); the module's result."""
    desc = cluster.desc
    results: dict[tuple[str, str], dict[str, Any]] = {}
    cluster.check_mode = bool(module.check_mode)
    if module.check_mode:
        for region, role, spec, plan_ in cluster.each():
            res = region_result.region_result(spec, plan_)
            res["changed"] = bool(plan_.to_launch or plan_.to_terminate or plan_.network_changes or plan_.to_replace)
            res["running"] = len(plan_.in_scope) - len(plan_.to_terminate) + plan_.to_launch
            res["instances"] = [inst.view(i, region, plan_.reads.architectures) for i in plan_.in_scope
                                if i not in plan_.to_terminate]
            res["reasons"] = why(desc, role, plan_)
            results[(region, role)] = res
    else:
        reasons = {(region, role): why(desc, role, plan_) for region, role, _spec, plan_ in cluster.each()}
        done, errors = run_per_region(cluster.plans, lambda r: _apply_region(cluster, r))
        region_plan.raise_all(errors, acting=True)
        for region, by_role in done.items():
            for role, res in by_role.items():
                res["reasons"] = reasons[(region, role)]
                results[(region, role)] = res
        if desc.mode == "heal" and desc.overflow:
            _overflow(cluster, results)
        if desc.orchestrator is not None:
            _sync_nats(cluster, results)
    out = cluster_summary(cluster, results)
    if cluster.learn is not None:
        out["pool_history"] = {"path": cluster.learn.path, "kept": cluster.learn.enabled,
                               "written": cluster.learn.enabled and not cluster.check_mode,
                               "records": len(cluster.learn.history.records),
                               "now": cluster.learn.now.isoformat(), "warnings": list(cluster.learn.warnings)}
    if desc.rebalance is not None:
        out["rebalance"] = {"moves": cluster.moves.get("moves", []), "kept": cluster.moves.get("kept", []),
                            "settings": dict(desc.rebalance)}
    out["event_path"] = _event_paths(module, cluster)
    out["changed"] = out["changed"] or any(row["changed"] for row in out["event_path"].values())
    return out


def _event_paths(module: Any, cluster: Cluster) -> dict[str, dict[str, Any]]:
    """autoheal: the event path in every region the cluster uses (compute, overflow, the
    orchestrator's), in converge and heal; ``{}`` with ``autoheal: false`` or in release."""
    if not module.params.get("autoheal", True) or cluster.desc.mode == "release":
        return {}
    spec = cluster.specs["compute"]
    regions = list(cluster.plans)
    rows = cluster_events.ensure_all(lambda r: event_path.clients(module, r), spec.cluster_name, regions,
                                     spec.tags, cluster.check_mode)
    broken = [f"{r}: {row['error']}" for r, row in rows.items() if row["error"]]
    if broken:
        module.warn("spot_cluster could not make the autoheal event path in " + "; ".join(broken)
                    + ". The cluster is healed without it; run again, or heal.yml from cron until it is there.")
    return rows


def run(module: Any, desc: ClusterDesc) -> dict[str, Any]:
    return apply(module, plan(module, desc))
