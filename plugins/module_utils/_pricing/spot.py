# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a cluster costs per hour, from EC2's spot price history. Private.

One ``DescribeSpotPriceHistory`` per region, for the instance types in use and
``StartTime=now`` (EC2 then answers with the price in force in every zone). On-demand
instances have no price here: EC2 has no on-demand price API; their prices come from
the Price List service (``_price_list``, cached on the controller) when the caller
has them, and are otherwise unknown (``None``), never guessed.
"""

from __future__ import annotations

import datetime
from typing import Any

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import paginate

PRODUCT = "Linux/UNIX"


def spot_prices(ec2: Any, instance_types: list[str]) -> dict[tuple[str, str], float]:
    """(instance type, zone) -> USD per hour, the newest price of each."""
    if not instance_types:
        return {}
    now = datetime.datetime.now(datetime.timezone.utc)
    history = paginate(ec2, "describe_spot_price_history", "SpotPriceHistory",
                       InstanceTypes=sorted(set(instance_types)), ProductDescriptions=[PRODUCT], StartTime=now)
    newest: dict[tuple[str, str], tuple[Any, float]] = {}
    for entry in history:
        if not str(entry.get("ProductDescription", PRODUCT)).startswith(PRODUCT):
            continue
        key = (entry["InstanceType"], entry["AvailabilityZone"])
        stamp = entry.get("Timestamp")
        if key not in newest or (stamp is not None and stamp > newest[key][0]):
            newest[key] = (stamp, float(entry["SpotPrice"]))
    return {key: price for key, (_stamp, price) in newest.items()}


def hourly_cost(instances: list[dict[str, Any]], prices: dict[tuple[str, str], float],
                on_demand: dict[str, float] | None = None) -> float | None:
    """Sum over instance views; ``None`` when any instance has no known price. On-demand
    instances are priced from ``on_demand`` (instance type -> USD/hour, the Price List's)."""
    total = 0.0
    for inst in instances:
        if inst.get("lifecycle") != "spot":
            price = (on_demand or {}).get(inst["instance_type"])
        else:
            price = prices.get((inst["instance_type"], inst["availability_zone"]))
        if price is None:
            return None
        total += price
    return round(total, 6)
