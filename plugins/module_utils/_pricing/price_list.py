# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""On-demand prices from the AWS Price List service, cached on the controller. Private.

EC2 has no on-demand price call; the Price List service (``pricing``) has them, as
products: one per instance type, region, operating system, tenancy, pre-installed
software and capacity status, each with its terms. The price wanted here is the one
a plain launch pays: Linux, shared tenancy, no pre-installed software, capacity
status ``Used`` (:data:`LINUX_ON_DEMAND`), from ``terms.OnDemand...pricePerUnit.USD``.

The service is not regional: it is served from a few endpoints, of which
:data:`PRICE_LIST_REGION` is one, and it answers for every region there. One
``GetProducts`` (paginated) asks for a batch of types of one region at once
(``ANY_OF`` on ``instanceType``). Prices change rarely, so they are cached in a JSON
file on the controller (:data:`DEFAULT_CACHE`, with the date each was read) and read
again once older than ``max_age_days``; a type the service has no product for is
cached too (as ``null``), so that it is not asked for on every run. When the service
cannot be reached, prices cached earlier are used however old they are.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from typing import Any, Iterable

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_text
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import paginate
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import region_client

try:
    import botocore.exceptions
except ImportError:  # AnsibleAWSModule reports a missing botocore
    pass

PRICE_LIST_REGION = "us-east-1"  # the Price List's endpoints: us-east-1, eu-central-1, ap-south-1
SERVICE_CODE = "AmazonEC2"
LINUX_ON_DEMAND = {"operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}
DEFAULT_CACHE = os.path.join("~", ".cache", "bacalhau.aws_spot", "on-demand-prices.json")
DEFAULT_MAX_AGE_DAYS = 7
CACHE_VERSION = 1
# ANY_OF takes the types comma-separated in one value of at most 1,024 characters
BATCH_CHARS = 1000
BATCH_TYPES = 50


def default_cache_path() -> str:
    """``$XDG_CACHE_HOME/bacalhau.aws_spot/on-demand-prices.json``, else under ``~/.cache``."""
    base = os.environ.get("XDG_CACHE_HOME")
    if base:
        return os.path.join(base, "bacalhau.aws_spot", "on-demand-prices.json")
    return os.path.expanduser(DEFAULT_CACHE)


# --------------------------------------------------------------------------- the service
def batches(instance_types: Iterable[str]) -> list[list[str]]:
    """The types in groups that fit one ``ANY_OF`` value."""
    out: list[list[str]] = []
    for itype in sorted(set(instance_types)):
        if out and len(out[-1]) < BATCH_TYPES and len(",".join(out[-1] + [itype])) <= BATCH_CHARS:
            out[-1].append(itype)
        else:
            out.append([itype])
    return out


def product_price(product: dict[str, Any]) -> float | None:
    """USD per hour of one Price List product (its first hourly on-demand price), or None."""
    for term in (product.get("terms", {}).get("OnDemand") or {}).values():
        for dimension in (term.get("priceDimensions") or {}).values():
            usd = (dimension.get("pricePerUnit") or {}).get("USD")
            if usd is not None and str(dimension.get("unit", "Hrs")).lower().startswith("hr"):
                return float(usd)
    return None


def fetch_prices(pricing: Any, region: str, instance_types: Iterable[str]) -> dict[str, float | None]:
    """Instance type -> Linux on-demand USD/hour in ``region`` (None: no such product).

    ``pricing`` is a Price List client (:func:`price_list_client`); one paginated
    ``GetProducts`` per batch of types.
    """
    prices: dict[str, float | None] = {t: None for t in instance_types}
    for batch in batches(prices):
        filters = [{"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
                   {"Type": "ANY_OF", "Field": "instanceType", "Value": ",".join(batch)}]
        filters += [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in LINUX_ON_DEMAND.items()]
        listed = paginate(pricing, "get_products", "PriceList", ServiceCode=SERVICE_CODE, Filters=filters,
                          FormatVersion="aws_v1")
        chosen: dict[str, tuple[bool, float]] = {}
        for entry in listed:
            product = json.loads(entry) if isinstance(entry, str) else entry
            attributes = product.get("product", {}).get("attributes", {})
            itype, price = attributes.get("instanceType"), product_price(product)
            if itype not in prices or price is None:
                continue
            # several products can still match (e.g. other license models): the plain
            # RunInstances one first, then the cheapest
            rank = (attributes.get("operation", "RunInstances") != "RunInstances", price)
            if itype not in chosen or rank < chosen[itype]:
                chosen[itype] = rank
        for itype, (_other, price) in chosen.items():
            prices[itype] = price
    return prices


def price_list_client(module: Any) -> Any:
    """A retrying Price List client (the service answers from :data:`PRICE_LIST_REGION`)."""
    return region_client(module, "pricing", PRICE_LIST_REGION)


# --------------------------------------------------------------------------- the cache
def load_cache(path: str) -> dict[str, dict[str, dict[str, Any]]]:
    """region -> type -> {"usd_per_hour", "date"}; an absent or unreadable file is an empty cache."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("prices"), dict):
        return {}
    return {region: dict(types) for region, types in data["prices"].items() if isinstance(types, dict)}


def save_cache(path: str, prices: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Write the cache whole, atomically (a run killed half-way leaves the old file)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    document = {"version": CACHE_VERSION, "source": "AWS Price List API (pricing:GetProducts)",
                "filters": LINUX_ON_DEMAND, "prices": prices}
    handle, temporary = tempfile.mkstemp(prefix=".on-demand-prices.", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _fresh(entry: dict[str, Any] | None, today: datetime.date, max_age_days: int) -> bool:
    try:
        read = datetime.date.fromisoformat(str((entry or {})["date"]))
    except (KeyError, ValueError):
        return False
    return 0 <= (today - read).days <= max_age_days


# --------------------------------------------------------------------------- what modules call
def on_demand_prices(
    module: Any,
    wanted: Iterable[tuple[str, str]],
    cache_path: str | None = None,
    max_age_days: int = DEFAULT_MAX_AGE_DAYS,
    today: datetime.date | None = None,
    pricing: Any = None,
) -> dict[tuple[str, str], float | None]:
    """(region, instance type) -> Linux on-demand USD/hour, None where AWS has no price.

    Cached entries younger than ``max_age_days`` are used as they are; the rest are read
    from the Price List service (one call per region and batch of types) and cached.
    Raises :class:`AwsSpotError` when the service fails and some price was never cached.
    """
    pairs = sorted(set(wanted))
    if not pairs:
        return {}
    path = os.path.expanduser(cache_path) if cache_path else default_cache_path()
    today = today or datetime.datetime.now(datetime.timezone.utc).date()
    cache = load_cache(path)
    missing: dict[str, list[str]] = {}
    for region, itype in pairs:
        if not _fresh(cache.get(region, {}).get(itype), today, max_age_days):
            missing.setdefault(region, []).append(itype)
    if missing:
        client = pricing or price_list_client(module)
        stamp = today.isoformat()
        failed: dict[str, BaseException] = {}
        for region, types in sorted(missing.items()):
            try:
                fetched = fetch_prices(client, region, types)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                failed[region] = exc
                continue
            for itype, price in fetched.items():
                cache.setdefault(region, {})[itype] = {"usd_per_hour": price, "date": stamp}
        never = [(r, t) for r in failed for t in missing[r] if t not in cache.get(r, {})]
        if never:
            region = never[0][0]
            raise AwsSpotError(
                f"the AWS Price List API did not answer the on-demand price of "
                f"{', '.join(sorted(t for r, t in never if r == region))} in {region}: "
                f"{error_text(failed[region])}. The collection's IAM policy needs pricing:GetProducts.",
                region,
            )
        if len(failed) < len(missing):
            try:
                save_cache(path, cache)
            except OSError as exc:
                module.warn(f"could not write the on-demand price cache {path}: {exc}")
    return {(region, itype): cache.get(region, {}).get(itype, {}).get("usd_per_hour") for region, itype in pairs}
