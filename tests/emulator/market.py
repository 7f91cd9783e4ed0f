"""The spot market of the offline AWS world: what is offered where, at what price, how likely.

moto answers none of this usefully (one price for everything, no placement scores, no
requirements-to-types, no Price List service), so the emulator answers these calls
itself, from seeded, deterministic numbers that tests can change through the control
API (``POST /_emulator/market``, see ``server.py``):

* **offerings per zone** (``DescribeInstanceTypeOfferings``): moto's snapshot of AWS's
  own per-zone lists (some types are missing in some zones, as on AWS: ``us-east-1e`` =
  ``use1-az3`` has no Nitro types), except that :data:`COMMON_TYPES` (the types the tests
  use) are offered in every zone of every region that offers them at all. ``RunInstances``
  (and the first override of ``CreateFleet``) into a zone that does not offer the type is
  refused with ``Unsupported``, as EC2 does.
* **spot prices** (``DescribeSpotPriceHistory``): per (region, zone, type), about a third
  of the seeded on-demand price, spread +-15% by zone and varying +-5% every
  :data:`PRICE_STEP` of (emulated: ``clock.py``) time; no entry for a type a zone does not
  offer. A spot price rule may hold only ``from`` and/or ``until`` an ISO time (a known price
  history: the history then also lists a change at those times).
* **placement scores** (``GetSpotPlacementScores``): 3-9 per (zone, type), seeded; a
  region's score is the best of its zones'; a request's is the best of its types'. A
  capacity fault (``POST /_emulator/faults``, ``capacity``) that covers spot launches of a
  type in a zone or region makes its score 1; explicit score rules win over both.
* **instance types** (``DescribeInstanceTypes``): moto's, with its filters, in pages of at
  most 100 as on EC2 (moto answers every type at once).
* **requirements to types** (``GetInstanceTypesFromInstanceRequirements``): moto's
  instance type data (vCPUs, memory, architecture, burstable, bare metal, generation,
  manufacturer, accelerators, local storage), for the types the region offers.
* **on-demand prices** (the Price List service, ``AWSPriceListService.GetProducts``):
  seeded from vCPUs and memory for every type a region offers. **Not AWS's numbers.**

Rules given through the control API are applied in the order given, the last matching
rule winning (a spot ``factor`` multiplies whatever the earlier rules or the seed gave).
"""
from __future__ import annotations

import base64
import datetime
import fnmatch
import hashlib
import json
import threading
import uuid
from typing import Any, Callable, Iterable, Iterator

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.availability_zones_and_regions import RegionsAndZonesBackend
from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS, INSTANCE_TYPES

from .clock import CLOCK, parse_time

# The types the test suites launch: offered in every zone of a region that offers them,
# so that a test that does not care where it lands never lands in a zone without them
# (AWS's us-east-1e lacks most of them; see the README's gaps).
COMMON_TYPES = frozenset({
    "t2.micro", "t3.micro", "t3.small", "t3.medium", "t3.large", "t4g.micro", "t4g.small", "t4g.medium",
    "m5.large", "m5.xlarge", "c5.large", "m6g.large", "c6g.large", "c7g.large", "m7g.medium", "m7g.large",
    "r8g.large", "m1.small",
})
PRICE_STEP = datetime.timedelta(hours=6)  # spot prices change at most this often
DEFAULT_HISTORY = datetime.timedelta(days=1)  # DescribeSpotPriceHistory without StartTime
PRODUCT = "Linux/UNIX"
SPOT_PRODUCTS = ("Linux/UNIX",)
SCORE_PAGE = 10  # GetSpotPlacementScores: "the top 10 Regions or Availability Zones"
PRICE_LIST_PAGE = 100
OFFER_TERM_ON_DEMAND = "JRTCKXETXF"  # AWS's offer term code of every on-demand term
RATE_CODE_HOURLY = "6YS6EN2CT7"
PUBLICATION = "2026-11-01T00:00:00Z"
RULE_KINDS = ("placement_scores", "spot_prices", "offerings", "on_demand_prices")


def _frac(*parts: Any) -> float:
    """A stable number in [0, 1] for the given parts."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF


def _now() -> datetime.datetime:
    """The emulated now (``clock.py``)."""
    return CLOCK.now()


def _info(itype: str) -> dict[str, Any]:
    return INSTANCE_TYPES.get(itype, {})


def vcpus(itype: str) -> int:
    return int(_info(itype).get("VCpuInfo", {}).get("DefaultVCpus", 2))


def memory_mib(itype: str) -> int:
    return int(_info(itype).get("MemoryInfo", {}).get("SizeInMiB", 4096))


def architectures(itype: str) -> list[str]:
    return list(_info(itype).get("ProcessorInfo", {}).get("SupportedArchitectures") or ["x86_64"])


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError) as exc:
        raise EC2ClientError("InvalidNextToken", "The specified token is invalid.") from exc


def _page(items: list[Any], token: str | None, size: int) -> tuple[list[Any], str | None]:
    start = _offset(token)
    end = start + size
    return items[start:end], (_token(end) if end < len(items) else None)


def _matches(patterns: Iterable[str] | None, value: str) -> bool:
    """EC2 filter values: any of them, ``*`` and ``?`` as wildcards. No values = any."""
    patterns = list(patterns or [])
    return not patterns or any(fnmatch.fnmatchcase(value, p) for p in patterns)


# --------------------------------------------------------------------------- the market
class Market:
    """Seeds and the rules tests set, shared by every request thread."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        # set by server.make_app: the capacity fault rules in force (read, never consumed)
        self.capacity_rules: Callable[[], list[dict[str, Any]]] = list
        self._base: dict[str, dict[str, set[str]]] = {}
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self.rules: dict[str, list[dict[str, Any]]] = {kind: [] for kind in RULE_KINDS}

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {kind: [dict(r) for r in rules] for kind, rules in self.rules.items()}

    def update(self, body: dict[str, Any]) -> None:
        unknown = set(body) - set(RULE_KINDS)
        if unknown:
            raise ValueError(f"unknown market rule kinds: {sorted(unknown)}; known: {', '.join(RULE_KINDS)}")
        checked: dict[str, list[dict[str, Any]]] = {}
        for kind in RULE_KINDS:
            checked[kind] = [self._check(kind, dict(rule)) for rule in body.get(kind) or []]
        with self.lock:
            for kind, rules in checked.items():
                self.rules[kind].extend(rules)

    def _check(self, kind: str, rule: dict[str, Any]) -> dict[str, Any]:
        allowed = {"region", "availability_zone", "instance_type"}
        if kind == "placement_scores":
            allowed |= {"score"}
            score = rule.get("score")
            if not isinstance(score, int) or not 1 <= score <= 10:
                raise ValueError(f"placement_scores: score must be an integer from 1 to 10, not {score!r}")
        elif kind == "spot_prices":
            allowed |= {"price", "factor", "from", "until"}
            if ("price" in rule) == ("factor" in rule):
                raise ValueError("spot_prices: give either price (USD/hour) or factor")
            value = rule.get("price", rule.get("factor"))
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"spot_prices: price and factor must be positive numbers, not {value!r}")
            for bound in ("from", "until"):
                if rule.get(bound) is not None:
                    try:
                        rule[bound] = parse_time(rule[bound]).isoformat()
                    except (TypeError, ValueError) as exc:
                        raise ValueError(f"spot_prices: {bound} must be an ISO 8601 time, not {rule[bound]!r}") from exc
            if rule.get("from") and rule.get("until") and rule["from"] >= rule["until"]:
                raise ValueError("spot_prices: from must be before until")
        elif kind == "offerings":
            allowed |= {"offered"}
            if not isinstance(rule.get("offered"), bool):
                raise ValueError("offerings: offered must be true or false")
        elif kind == "on_demand_prices":
            allowed = {"region", "instance_type", "price", "factor"}
            if "instance_type" not in rule and "factor" not in rule:
                raise ValueError("on_demand_prices: a price needs an instance_type (a factor may cover all)")
            if "price" in rule and "factor" in rule:
                raise ValueError("on_demand_prices: give either price (USD/hour, null = no product) or factor")
            value = rule.get("price", rule.get("factor"))
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"on_demand_prices: price must be a positive number or null, not {value!r}")
        extra = set(rule) - allowed
        if extra:
            raise ValueError(f"{kind}: unknown keys {sorted(extra)}; known: {sorted(allowed)}")
        if kind != "on_demand_prices" and "region" not in rule:
            raise ValueError(f"{kind}: a rule needs a region")
        if "region" in rule and rule["region"] not in RegionsAndZonesBackend.zones:
            raise ValueError(f"{kind}: unknown region {rule['region']}")
        zone = rule.get("availability_zone")
        if zone is not None:
            name = self.zone_name(rule["region"], zone)
            if name is None:
                raise ValueError(f"{kind}: {zone} is not a zone of {rule['region']}")
            rule["availability_zone"] = name
        itype = rule.get("instance_type")
        if itype is not None and itype not in INSTANCE_TYPES:
            raise ValueError(f"{kind}: unknown instance type {itype}")
        return rule

    def _rules(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.rules[kind])

    # -- zones
    @staticmethod
    def regions() -> list[str]:
        """The regions with an offerings snapshot (moto has no data, so nothing, for the rest)."""
        return sorted(r for r in RegionsAndZonesBackend.zones if r in INSTANCE_TYPE_OFFERINGS["availability-zone"])

    @staticmethod
    def zones(region: str) -> list[tuple[str, str]]:
        """(name, id) of every zone of a region, as DescribeAvailabilityZones answers."""
        return [(z.name, z.zone_id) for z in RegionsAndZonesBackend.zones.get(region, [])]

    def zone_name(self, region: str, zone: str) -> str | None:
        for name, zone_id in self.zones(region):
            if zone in (name, zone_id):
                return name
        return None

    def zone_id(self, region: str, zone: str) -> str | None:
        return dict(self.zones(region)).get(zone)

    # -- offerings
    def _seeded_offerings(self, region: str) -> dict[str, set[str]]:
        """Zone name -> types offered there, before the rules (cached: the seed never changes)."""
        with self.lock:
            if region not in self._base:
                by_zone: dict[str, set[str]] = {name: set() for name, _id in self.zones(region)}
                for offer in INSTANCE_TYPE_OFFERINGS["availability-zone"].get(region, []):
                    if offer["Location"] in by_zone and offer["InstanceType"] in INSTANCE_TYPES:
                        by_zone[offer["Location"]].add(offer["InstanceType"])
                in_region = set().union(*by_zone.values()) if by_zone else set()
                for types in by_zone.values():
                    types |= COMMON_TYPES & in_region
                self._base[region] = by_zone
            return self._base[region]

    def offered(self, region: str, zone: str, itype: str) -> bool:
        result = itype in self._seeded_offerings(region).get(zone, set())
        for rule in self._rules("offerings"):
            if rule["region"] == region and rule.get("availability_zone") in (None, zone) \
                    and rule.get("instance_type") in (None, itype):
                result = rule["offered"] and itype in INSTANCE_TYPES
        return result

    def zone_types(self, region: str, zone: str) -> set[str]:
        types = set(self._seeded_offerings(region).get(zone, set()))
        for rule in self._rules("offerings"):
            if rule["region"] != region or rule.get("availability_zone") not in (None, zone):
                continue
            named = {rule["instance_type"]} if rule.get("instance_type") else set(INSTANCE_TYPES)
            if rule["offered"]:
                types |= named
            else:
                types -= named
        return types

    def offerings(self, region: str) -> dict[str, set[str]]:
        """Zone name -> types offered there now."""
        return {name: self.zone_types(region, name) for name, _id in self.zones(region)}

    def region_types(self, region: str) -> set[str]:
        offerings = self.offerings(region)
        return set().union(*offerings.values()) if offerings else set()

    def zones_offering(self, region: str, itype: str) -> list[str]:
        return [name for name, types in self.offerings(region).items() if itype in types]

    # -- prices
    @staticmethod
    def seeded_on_demand(region: str, itype: str) -> float:
        """USD/hour for Linux, shared tenancy: from vCPUs and memory, arm64 20% cheaper, by region."""
        price = vcpus(itype) * 0.024 + (memory_mib(itype) / 1024) * 0.003
        if "arm64" in architectures(itype):
            price *= 0.8
        if _info(itype).get("BurstablePerformanceSupported"):
            price *= 0.9
        return price * (1.0 + 0.25 * _frac("region", region))

    def on_demand(self, region: str, itype: str, offered: set[str] | None = None) -> float | None:
        """The Linux/shared on-demand price, after the rules; None = no such product.

        ``offered``: the region's types, when the caller has them already.
        """
        if itype not in (self.region_types(region) if offered is None else offered):
            return None
        price: float | None = self.seeded_on_demand(region, itype)
        for rule in self._rules("on_demand_prices"):
            if rule.get("region") not in (None, region) or rule.get("instance_type") not in (None, itype):
                continue
            if "factor" in rule:
                price = None if price is None else price * rule["factor"]
            else:
                price = rule["price"]
        return None if price is None else round(price, 6)

    def spot_price(self, region: str, zone: str, itype: str, at: datetime.datetime) -> float | None:
        """USD/hour in force at ``at``; None where the zone does not offer the type."""
        if not self.offered(region, zone, itype):
            return None
        step = _step(at)
        price = (self.seeded_on_demand(region, itype) * 0.35 * (0.85 + 0.30 * _frac("spot", region, zone, itype))
                 * (0.95 + 0.10 * _frac("time", region, zone, itype, step.isoformat())))
        for rule in self._rules("spot_prices"):
            if rule["region"] == region and rule.get("availability_zone") in (None, zone) \
                    and rule.get("instance_type") in (None, itype) and _in_force(rule, at):
                price = rule["price"] if "price" in rule else price * rule["factor"]
        return round(price, 6)

    def price_boundaries(self, region: str, zone: str, itype: str) -> list[datetime.datetime]:
        """The times at which a timed spot price rule for the pool begins or ends."""
        out = set()
        for rule in self._rules("spot_prices"):
            if rule["region"] == region and rule.get("availability_zone") in (None, zone) \
                    and rule.get("instance_type") in (None, itype):
                out.update(parse_time(rule[b]) for b in ("from", "until") if rule.get(b))
        return sorted(out)

    # -- placement scores
    def _blocked(self, region: str, zone: str | None, itype: str) -> bool:
        """A capacity fault that refuses spot launches of the type there (zone None: anywhere in region)."""
        for rule in self.capacity_rules():
            if rule.get("region") != region or rule.get("market") not in (None, "spot"):
                continue
            if rule.get("instance_type") not in (None, itype):
                continue
            if rule.get("count") is not None and rule["count"] <= 0:
                continue
            if rule.get("availability_zone") is None or rule.get("availability_zone") == zone:
                return True
        return False

    def zone_score(self, region: str, zone: str, itype: str) -> int | None:
        """1-10, or None where the zone does not offer the type (and no rule says otherwise)."""
        score = None
        if self.offered(region, zone, itype):
            score = 1 if self._blocked(region, zone, itype) else 3 + int(6.999 * _frac("score", region, zone, itype))
        for rule in self._rules("placement_scores"):
            if rule["region"] == region and rule.get("availability_zone") in (None, zone) \
                    and rule.get("instance_type") in (None, itype):
                score = rule["score"]
        return score

    def region_score(self, region: str, itype: str) -> int | None:
        scores = [s for s in (self.zone_score(region, zone, itype) for zone, _id in self.zones(region))
                  if s is not None]
        score = max(scores) if scores else None
        if score is not None and self._blocked(region, None, itype):
            score = 1
        for rule in self._rules("placement_scores"):
            if rule["region"] == region and rule.get("availability_zone") is None \
                    and rule.get("instance_type") in (None, itype):
                score = rule["score"]
        return score


def _in_force(rule: dict[str, Any], at: datetime.datetime) -> bool:
    at = at if at.tzinfo else at.replace(tzinfo=datetime.timezone.utc)
    return ((not rule.get("from") or parse_time(rule["from"]) <= at)
            and (not rule.get("until") or at < parse_time(rule["until"])))


def _step(at: datetime.datetime) -> datetime.datetime:
    """The start of the price step ``at`` falls in."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.timezone.utc)
    epoch = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    steps = (at - epoch) // PRICE_STEP
    return epoch + steps * PRICE_STEP


MARKET = Market()


# --------------------------------------------------------------------------- EC2 answers
def _filters(response: Any) -> dict[str, list[str]]:
    return {k: list(v) for k, v in (response._filters_from_querystring() or {}).items()}


def describe_instance_type_offerings(self: Any) -> ActionResult:
    location_type = self._get_param("LocationType") or "region"
    if location_type not in ("region", "availability-zone", "availability-zone-id"):
        raise EC2ClientError("InvalidParameterValue", f"Invalid value '{location_type}' for LocationType.")
    filters = _filters(self)
    unknown = set(filters) - {"location", "instance-type"}
    if unknown:
        raise EC2ClientError("InvalidParameterValue", f"The filter '{sorted(unknown)[0]}' is invalid")
    region = self.region
    offers = []
    if location_type == "region":
        for itype in sorted(MARKET.region_types(region)):
            offers.append({"InstanceType": itype, "LocationType": "region", "Location": region})
    else:
        ids = dict(MARKET.zones(region))
        for zone, types in MARKET.offerings(region).items():
            location = zone if location_type == "availability-zone" else ids[zone]
            offers.extend({"InstanceType": t, "LocationType": location_type, "Location": location}
                          for t in sorted(types))
    offers = [o for o in offers if _matches(filters.get("location"), o["Location"])
              and _matches(filters.get("instance-type"), o["InstanceType"])]
    page, token = _page(offers, self._get_param("NextToken"), int(self._get_param("MaxResults") or 1000))
    result: dict[str, Any] = {"InstanceTypeOfferings": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def describe_instance_types(self: Any) -> ActionResult:
    """moto's answer (its filters), in pages of at most MaxResults (EC2: 5-100) as EC2 gives them."""
    types = self.ec2_backend.describe_instance_types(self._get_param("InstanceTypes", []),
                                                     self._filters_from_querystring())
    size = int(self._get_param("MaxResults") or 100)
    if not 5 <= size <= 100:
        raise EC2ClientError("InvalidParameterValue", f"MaxResults must be between 5 and 100, not {size}.")
    page, token = _page(list(types), self._get_param("NextToken"), size)
    result: dict[str, Any] = {"InstanceTypes": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def describe_spot_price_history(self: Any) -> ActionResult:
    region = self.region
    now = _now()
    end = _aware(self._get_param("EndTime")) or now
    start = _aware(self._get_param("StartTime")) or (end - DEFAULT_HISTORY)
    if start > end:
        raise EC2ClientError("InvalidParameterValue", "The start time must be before the end time.")
    filters = _filters(self)
    types = list(self._get_param("InstanceTypes") or []) or None
    products = list(self._get_param("ProductDescriptions") or []) + filters.get("product-description", [])
    zones_wanted = [z for z in [self._get_param("AvailabilityZone")] if z] + filters.get("availability-zone", [])
    zone_ids_wanted = [z for z in [self._get_param("AvailabilityZoneId")] if z]
    history = []
    ids = dict(MARKET.zones(region))
    for zone, offered in MARKET.offerings(region).items():
        if not _matches(zones_wanted, zone) or not _matches(zone_ids_wanted, ids[zone]):
            continue
        for itype in sorted(offered):
            if types is not None and itype not in types:
                continue
            if not _matches(filters.get("instance-type"), itype):
                continue
            for product in SPOT_PRODUCTS:
                if not _matches(products, product):
                    continue
                history.extend(_price_changes(region, zone, ids[zone], itype, product, start, end))
    history.sort(key=lambda h: (h["Timestamp"], h["AvailabilityZone"], h["InstanceType"]), reverse=True)
    page, token = _page(history, self._get_param("NextToken"), int(self._get_param("MaxResults") or 1000))
    return ActionResult({"SpotPriceHistory": page, "NextToken": token or ""})


def _aware(value: Any) -> datetime.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    text = str(value).replace("Z", "+00:00")
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        parsed = datetime.datetime.fromtimestamp(float(text), tz=datetime.timezone.utc)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


def _price_changes(region: str, zone: str, zone_id: str, itype: str, product: str,
                   start: datetime.datetime, end: datetime.datetime) -> list[dict[str, Any]]:
    """The price in force at ``start`` and every change up to ``end``, as EC2 lists them
    (a price changes at a step of :data:`PRICE_STEP`, or where a timed rule begins or ends)."""
    times = set()
    step = _step(start)
    while step <= end:
        times.add(step)
        step += PRICE_STEP
    times.update(t for t in MARKET.price_boundaries(region, zone, itype) if _step(start) <= t <= end)
    first = max(t for t in times if t <= start)
    changes = []
    last = None
    for moment in sorted(t for t in times if t >= first):
        price = MARKET.spot_price(region, zone, itype, moment)
        if price is not None and price != last:
            changes.append({"AvailabilityZone": zone, "AvailabilityZoneId": zone_id, "InstanceType": itype,
                            "ProductDescription": product, "SpotPrice": f"{price:.6f}", "Timestamp": moment})
        last = price
    return changes


def _requirements_types(region: str, architectures_wanted: list[str], virtualization: list[str],
                        req: dict[str, Any]) -> list[str]:
    """The types offered in the region that meet InstanceRequirements, sorted by name."""
    def within(value: float, bounds: dict[str, Any] | None) -> bool:
        bounds = bounds or {}
        low, high = bounds.get("Min"), bounds.get("Max")
        return (low is None or value >= float(low)) and (high is None or value <= float(high))

    def include(setting: str | None, present: bool, default: str) -> bool:
        setting = setting or default
        return setting == "included" or (setting == "required") == present

    manufacturers = {"Intel": "intel", "AMD": "amd", "AWS": "amazon-web-services", "Apple": "apple"}
    generations = list(req.get("InstanceGenerations") or [])
    out = []
    for itype in sorted(MARKET.region_types(region)):
        info = _info(itype)
        if not set(architectures(itype)) & set(architectures_wanted):
            continue
        if not set(info.get("SupportedVirtualizationTypes") or ["hvm"]) & set(virtualization):
            continue
        cpus, mib = vcpus(itype), memory_mib(itype)
        if not within(cpus, req.get("VCpuCount")) or not within(mib, req.get("MemoryMiB")):
            continue
        if req.get("MemoryGiBPerVCpu") and not within(mib / 1024 / cpus, req["MemoryGiBPerVCpu"]):
            continue
        made_by = manufacturers.get(info.get("ProcessorInfo", {}).get("Manufacturer", ""), "")
        if req.get("CpuManufacturers") and made_by not in req["CpuManufacturers"]:
            continue
        if generations and ("current" if info.get("CurrentGeneration") else "previous") not in generations:
            continue
        if req.get("AllowedInstanceTypes") and not _matches(req["AllowedInstanceTypes"], itype):
            continue
        if req.get("ExcludedInstanceTypes") and _matches(req["ExcludedInstanceTypes"], itype):
            continue
        if not include(req.get("BareMetal"), bool(info.get("BareMetal")), "excluded"):
            continue
        if not include(req.get("BurstablePerformance"), bool(info.get("BurstablePerformanceSupported")), "excluded"):
            continue
        if not include(req.get("LocalStorage"), bool(info.get("InstanceStorageSupported")), "included"):
            continue
        if req.get("RequireHibernateSupport") and not info.get("HibernationSupported"):
            continue
        accelerators = sum(g.get("Count", 0) for g in (info.get("GpuInfo") or {}).get("Gpus", [])) \
            + sum(f.get("Count", 0) for f in (info.get("FpgaInfo") or {}).get("Fpgas", [])) \
            + sum(a.get("Count", 0) for a in (info.get("InferenceAcceleratorInfo") or {}).get("Accelerators", []))
        if req.get("AcceleratorCount") and not within(accelerators, req["AcceleratorCount"]):
            continue
        if req.get("NetworkInterfaceCount") and not within(
                info.get("NetworkInfo", {}).get("MaximumNetworkInterfaces", 1), req["NetworkInterfaceCount"]):
            continue
        if req.get("TotalLocalStorageGB") and not within(
                (info.get("InstanceStorageInfo") or {}).get("TotalSizeInGB", 0), req["TotalLocalStorageGB"]):
            continue
        out.append(itype)
    return out


def _check_requirements(architectures_wanted: Any, virtualization: Any, req: Any) -> None:
    if not architectures_wanted or not virtualization:
        raise EC2ClientError("MissingParameter",
                             "The request must contain the parameters ArchitectureTypes and VirtualizationTypes.")
    if not isinstance(req, dict) or not req.get("VCpuCount") or not req.get("MemoryMiB") \
            or req["VCpuCount"].get("Min") is None or req["MemoryMiB"].get("Min") is None:
        raise EC2ClientError("MissingParameter",
                             "InstanceRequirements must contain VCpuCount.Min and MemoryMiB.Min.")


def get_instance_types_from_instance_requirements(self: Any) -> ActionResult:
    wanted_arch = list(self._get_param("ArchitectureTypes") or [])
    wanted_virt = list(self._get_param("VirtualizationTypes") or [])
    req = self._get_param("InstanceRequirements") or {}
    _check_requirements(wanted_arch, wanted_virt, req)
    types = _requirements_types(self.region, wanted_arch, wanted_virt, req)
    page, token = _page([{"InstanceType": t} for t in types], self._get_param("NextToken"),
                        int(self._get_param("MaxResults") or 100))
    result: dict[str, Any] = {"InstanceTypes": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def get_spot_placement_scores(self: Any) -> ActionResult:
    types = list(self._get_param("InstanceTypes") or [])
    with_metadata = self._get_param("InstanceRequirementsWithMetadata")
    if bool(types) == bool(with_metadata):
        raise EC2ClientError("InvalidParameterCombination",
                             "Specify either InstanceTypes or InstanceRequirementsWithMetadata, but not both.")
    capacity = self._get_param("TargetCapacity")
    if capacity is None or not 1 <= int(capacity) <= 2000000000:
        raise EC2ClientError("InvalidParameterValue", "TargetCapacity must be between 1 and 2000000000.")
    unit = self._get_param("TargetCapacityUnitType")
    if unit is not None and not with_metadata:
        raise EC2ClientError("InvalidParameterCombination",
                             "TargetCapacityUnitType can be specified only with InstanceRequirementsWithMetadata.")
    unknown = [t for t in types if t not in INSTANCE_TYPES]
    if unknown:
        raise EC2ClientError("InvalidParameterValue", f"Invalid instance type(s): {', '.join(unknown)}")
    single_zone = str(self._get_param("SingleAvailabilityZone") or "").lower() == "true"
    regions = list(self._get_param("RegionNames") or []) or MARKET.regions()
    bad = [r for r in regions if r not in RegionsAndZonesBackend.zones]
    if bad:
        raise EC2ClientError("InvalidParameterValue", f"Invalid region(s): {', '.join(bad)}")
    scores = []
    for region in regions:
        wanted = types
        if with_metadata:
            req = with_metadata.get("InstanceRequirements") or {}
            arch = list(with_metadata.get("ArchitectureTypes") or [])
            virt = list(with_metadata.get("VirtualizationTypes") or [])
            _check_requirements(arch, virt, req)
            wanted = _requirements_types(region, arch, virt, req)
        if single_zone:
            for zone, zone_id in MARKET.zones(region):
                found = [s for s in (MARKET.zone_score(region, zone, t) for t in wanted) if s is not None]
                scores.append({"Region": region, "AvailabilityZoneId": zone_id, "Score": max(found) if found else 1})
        else:
            found = [s for s in (MARKET.region_score(region, t) for t in wanted) if s is not None]
            scores.append({"Region": region, "Score": max(found) if found else 1})
    scores.sort(key=lambda s: (-s["Score"], s["Region"], s.get("AvailabilityZoneId", "")))
    page, token = _page(scores, self._get_param("NextToken"), int(self._get_param("MaxResults") or SCORE_PAGE))
    result: dict[str, Any] = {"SpotPlacementScores": page}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def unsupported_launch(region: str, zone: str | None, itype: str | None) -> str | None:
    """EC2's ``Unsupported`` message for a launch of a type into a zone that does not offer it."""
    if not zone or not itype or MARKET.zone_name(region, zone) is None:
        return None
    zone = MARKET.zone_name(region, zone) or zone
    if MARKET.offered(region, zone, itype):
        return None
    others = MARKET.zones_offering(region, itype)
    if not others:
        return "The requested configuration is currently not supported. Please check the documentation for supported configurations."
    return (f"Your requested instance type ({itype}) is not supported in your requested Availability Zone ({zone}). "
            f"Please retry your request by not specifying an Availability Zone or choosing {', '.join(others)}.")


def patch_moto() -> None:
    """Let moto's EC2 responses answer the market calls from here (once)."""
    from moto.ec2.responses import EC2Response
    from moto.ec2.responses.instances import InstanceResponse
    from moto.ec2.responses.spot_instances import SpotInstances

    if getattr(EC2Response, "_bacalhau_market", False):
        return
    InstanceResponse.describe_instance_type_offerings = describe_instance_type_offerings  # type: ignore[method-assign]
    InstanceResponse.describe_instance_types = describe_instance_types  # type: ignore[method-assign]
    SpotInstances.describe_spot_price_history = describe_spot_price_history  # type: ignore[method-assign]
    EC2Response.get_spot_placement_scores = get_spot_placement_scores  # type: ignore[attr-defined]
    EC2Response.get_instance_types_from_instance_requirements = (  # type: ignore[attr-defined]
        get_instance_types_from_instance_requirements)
    EC2Response._bacalhau_market = True  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the Price List service
def _location(region: str) -> str:
    """The Price List's name for a region ("US East (N. Virginia)", "EU (Ireland)")."""
    import botocore.session

    for partition in botocore.session.get_session().get_data("endpoints")["partitions"]:
        described = partition.get("regions", {}).get(region, {}).get("description")
        if described:
            return described.replace("Europe (", "EU (")
    return region


_LOCATIONS: dict[str, str] = {}

# (operatingSystem, preInstalledSw) -> (operation, price added per vCPU-hour)
_SOFTWARE = {
    ("Linux", "NA"): ("RunInstances", 0.0),
    ("Linux", "SQL Web"): ("RunInstances:0200", 0.017),
    ("Windows", "NA"): ("RunInstances:0002", 0.046),
    ("Windows", "SQL Web"): ("RunInstances:0202", 0.063),
}
_TENANCY = {"Shared": ("BoxUsage", 1.0), "Dedicated": ("DedicatedUsage", 1.1)}
_CAPACITY = ("Used", "UnusedCapacityReservation", "AllocatedCapacityReservation")


def _products(region: str, itype: str, base: float) -> Iterator[dict[str, Any]]:
    """Every product of one type in one region (software x tenancy x capacity status)."""
    if region not in _LOCATIONS:
        _LOCATIONS[region] = _location(region)
    info = _info(itype)
    for (system, software), (operation, per_vcpu) in _SOFTWARE.items():
        for tenancy, (usage, factor) in _TENANCY.items():
            for status in _CAPACITY:
                attributes = {
                    "servicecode": "AmazonEC2", "servicename": "Amazon Elastic Compute Cloud",
                    "location": _LOCATIONS[region], "locationType": "AWS Region", "regionCode": region,
                    "instanceType": itype, "instanceFamily": "General purpose",
                    "currentGeneration": "Yes" if info.get("CurrentGeneration") else "No",
                    "vcpu": str(vcpus(itype)), "memory": f"{memory_mib(itype) / 1024:g} GiB",
                    "processorArchitecture": "64-bit", "physicalProcessor": info.get("ProcessorInfo", {}).get(
                        "Manufacturer", ""),
                    "networkPerformance": info.get("NetworkInfo", {}).get("NetworkPerformance", ""),
                    "storage": "EBS only" if not info.get("InstanceStorageSupported") else "SSD",
                    "tenancy": tenancy, "operatingSystem": system, "preInstalledSw": software,
                    "licenseModel": "No License required", "capacitystatus": status, "marketoption": "OnDemand",
                    "usagetype": f"{usage}:{itype}", "operation": operation,
                }
                price = (base + per_vcpu * vcpus(itype)) * factor
                yield {"attributes": attributes, "price": price}


def _product_json(product: dict[str, Any]) -> str:
    attributes = product["attributes"]
    sku = hashlib.sha256("/".join(f"{k}={v}" for k, v in sorted(attributes.items())).encode()).hexdigest()[:16].upper()
    term = f"{sku}.{OFFER_TERM_ON_DEMAND}"
    rate = f"{term}.{RATE_CODE_HOURLY}"
    price = f"{product['price']:.10f}"
    document = {
        "product": {"productFamily": "Compute Instance", "attributes": attributes, "sku": sku},
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {term: {
            "priceDimensions": {rate: {
                "unit": "Hrs", "endRange": "Inf", "beginRange": "0", "appliesTo": [], "rateCode": rate,
                "description": f"${float(price):.4f} per On Demand {attributes['operatingSystem']} "
                               f"{attributes['instanceType']} Instance Hour",
                "pricePerUnit": {"USD": price},
            }},
            "sku": sku, "effectiveDate": PUBLICATION, "offerTermCode": OFFER_TERM_ON_DEMAND, "termAttributes": {},
        }}},
        "version": PUBLICATION.replace("-", "").replace(":", "").replace("T", "").rstrip("Z"),
        "publicationDate": PUBLICATION,
    }
    return json.dumps(document, separators=(",", ":"))


def _filter_matches(value: str | None, kind: str, wanted: str) -> bool:
    if value is None:
        return False
    if kind in ("TERM_MATCH", "EQUALS"):
        return value.lower() == wanted.lower()
    if kind == "CONTAINS":
        return wanted.lower() in value.lower()
    options = [w.strip().lower() for w in wanted.split(",")]
    if kind == "ANY_OF":
        return value.lower() in options
    return value.lower() not in options  # NONE_OF


def _narrow(filters: list[dict[str, str]], field: str) -> set[str] | None:
    """The values one TERM_MATCH/EQUALS/ANY_OF filter allows for a field (to skip the rest early)."""
    allowed = None
    for f in filters:
        if f["Field"].lower() == field.lower() and f["Type"] in ("TERM_MATCH", "EQUALS", "ANY_OF"):
            values = {v.strip() for v in f["Value"].split(",")} if f["Type"] == "ANY_OF" else {f["Value"]}
            allowed = values if allowed is None else allowed & values
    return allowed


def get_products(body: dict[str, Any]) -> dict[str, Any]:
    service = body.get("ServiceCode")
    if not service:
        raise PriceListError("InvalidParameterException", "ServiceCode is required.")
    if service != "AmazonEC2":
        raise PriceListError("NotFoundException", f"Service {service} not found (the emulator prices AmazonEC2 only).")
    version = body.get("FormatVersion") or "aws_v1"
    if version != "aws_v1":
        raise PriceListError("InvalidParameterException", f"Invalid FormatVersion: {version}")
    filters = list(body.get("Filters") or [])
    for f in filters:
        if f.get("Type") not in ("TERM_MATCH", "EQUALS", "CONTAINS", "ANY_OF", "NONE_OF") \
                or not f.get("Field") or f.get("Value") is None:
            raise PriceListError("InvalidParameterException", f"Invalid filter: {json.dumps(f)}")
    size = int(body.get("MaxResults") or PRICE_LIST_PAGE)
    if not 1 <= size <= PRICE_LIST_PAGE:
        raise PriceListError("InvalidParameterException", "MaxResults must be between 1 and 100.")
    try:
        start = int(json.loads(base64.urlsafe_b64decode(body["NextToken"].encode()))["offset"]) \
            if body.get("NextToken") else 0
    except (ValueError, KeyError, TypeError) as exc:
        raise PriceListError("InvalidNextTokenException", "The NextToken is not valid.") from exc

    regions = _narrow(filters, "regionCode")
    locations = _narrow(filters, "location")
    types = _narrow(filters, "instanceType")
    matched: list[dict[str, Any]] = []
    for region in MARKET.regions():
        if regions is not None and region not in regions:
            continue
        if locations is not None and _location(region) not in locations:
            continue
        offered = MARKET.region_types(region)
        for itype in sorted(offered if types is None else offered & types):
            base = MARKET.on_demand(region, itype, offered)
            if base is None:
                continue
            for product in _products(region, itype, base):
                fields = dict(product["attributes"], productFamily="Compute Instance", ServiceCode="AmazonEC2")
                lowered = {k.lower(): v for k, v in fields.items()}
                if all(_filter_matches(lowered.get(f["Field"].lower()), f["Type"], f["Value"]) for f in filters):
                    matched.append(product)
    page = matched[start:start + size]
    answer: dict[str, Any] = {"FormatVersion": version, "PriceList": [_product_json(p) for p in page]}
    if start + size < len(matched):
        answer["NextToken"] = base64.urlsafe_b64encode(json.dumps({"offset": start + size}).encode()).decode()
    return answer


def describe_services(body: dict[str, Any]) -> dict[str, Any]:
    service = body.get("ServiceCode")
    if service not in (None, "AmazonEC2"):
        raise PriceListError("NotFoundException", f"Service {service} not found (the emulator prices AmazonEC2 only).")
    return {"FormatVersion": body.get("FormatVersion") or "aws_v1", "Services": [{
        "ServiceCode": "AmazonEC2",
        "AttributeNames": sorted(next(_products("us-east-1", "t3.micro", 0.01))["attributes"]),
    }]}


class PriceListError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


PRICE_LIST_OPERATIONS = {"GetProducts": get_products, "DescribeServices": describe_services}


def price_list_answer(operation: str, raw: bytes) -> tuple[str, list[tuple[str, str]], list[bytes]]:
    """The Price List service's answer to one JSON-protocol request (status, headers, body)."""
    headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", str(uuid.uuid4()))]
    try:
        handler = PRICE_LIST_OPERATIONS.get(operation)
        if handler is None:
            raise PriceListError("UnknownOperationException", f"The emulator does not answer pricing:{operation}.")
        body = json.loads(raw or b"{}")
        if not isinstance(body, dict):
            raise PriceListError("SerializationException", "The request body is not a JSON object.")
        return "200 OK", headers, [json.dumps(handler(body)).encode()]
    except PriceListError as exc:
        headers.append(("x-amzn-ErrorType", exc.code))
        return "400 Bad Request", headers, [json.dumps({"__type": exc.code, "Message": exc.message}).encode()]
    except ValueError as exc:
        headers.append(("x-amzn-ErrorType", "SerializationException"))
        return "400 Bad Request", headers, [json.dumps({"__type": "SerializationException",
                                                         "Message": str(exc)}).encode()]
