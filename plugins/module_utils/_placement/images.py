# -*- coding: utf-8 -*-
# Copyright: bacalhau.aws_spot contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ubuntu images and instance-type architectures. Private: not a public API.

The script this collection replaces guessed ARM from a list of name prefixes
(a1, t4g, c6g...) and missed every newer family. Here an instance type's
architecture always comes from ``DescribeInstanceTypes``
(``ProcessorInfo.SupportedArchitectures``), and an image is checked against it
before anything is launched.

Images are Canonical's: the SSM public parameter that Canonical maintains for the
newest build of each release is read first, ``DescribeImages`` by Canonical's
owner id and name pattern is the fallback (for partitions or accounts where the
parameter cannot be read).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Iterable

from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import AwsSpotError
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import check_regions
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import error_code
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import paginate
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import region_client
from ansible_collections.bacalhau.aws_spot.plugins.module_utils._aws.common import run_per_region

SUPPORTED_ARCHITECTURES = ("x86_64", "arm64")
UBUNTU_RELEASES = ("24.04", "22.04")
DEFAULT_RELEASE = "24.04"
CANONICAL_OWNER_ID = "099720109477"

# Canonical's naming: https://documentation.ubuntu.com/aws/en/latest/aws-how-to/instances/find-ubuntu-images/
_RELEASE_INFO = {
    # release: (codename, SSM volume segment)
    "24.04": ("noble", "ebs-gp3"),
    "22.04": ("jammy", "ebs-gp2"),
}
_DEB_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
_BATCH = 100  # DescribeInstanceTypes / offerings filters take up to 100 values


def ssm_parameter_name(release: str, architecture: str) -> str:
    _codename, volume = _RELEASE_INFO[release]
    return (
        f"/aws/service/canonical/ubuntu/server/{release}/stable/current/"
        f"{_DEB_ARCH[architecture]}/hvm/{volume}/ami-id"
    )


def image_name_pattern(release: str, architecture: str) -> str:
    codename, _volume = _RELEASE_INFO[release]
    return f"ubuntu/images/*ubuntu-{codename}-{release}-{_DEB_ARCH[architecture]}-server-*"


def _image_info(image: dict[str, Any], source: str) -> dict[str, Any]:
    return {
        "image_id": image["ImageId"],
        "name": image.get("Name"),
        "architecture": image.get("Architecture"),
        "creation_date": image.get("CreationDate"),
        "owner_id": image.get("OwnerId"),
        "source": source,
    }


def _chunks(items: list[str], size: int = _BATCH) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --------------------------------------------------------------------------- instance types
def instance_type_architectures(ec2: Any, instance_types: list[str]) -> dict[str, list[str]]:
    """Instance type -> the architectures it supports (ours only), from DescribeInstanceTypes.

    A filter (not ``InstanceTypes=``) is used so that one call answers for known and
    unknown types alike; the unknown ones are named in the error.
    """
    wanted = sorted(set(instance_types))
    found: dict[str, list[str]] = {}
    for chunk in _chunks(wanted):
        for itype in paginate(ec2, "describe_instance_types", "InstanceTypes",
                              Filters=[{"Name": "instance-type", "Values": chunk}]):
            found[itype["InstanceType"]] = list(itype.get("ProcessorInfo", {}).get("SupportedArchitectures", []))
    unknown = [t for t in wanted if t not in found]
    if unknown:
        raise AwsSpotError(
            f"unknown instance type(s): {', '.join(unknown)}. Check the spelling; "
            "'aws ec2 describe-instance-types' lists the types that exist."
        )
    return found


def pick_architecture(instance_type: str, supported: list[str]) -> str:
    """The one of our architectures an instance type runs (x86_64 preferred over i386)."""
    for arch in SUPPORTED_ARCHITECTURES:
        if arch in supported:
            return arch
    raise AwsSpotError(
        f"instance type {instance_type} supports only {', '.join(supported) or 'no known architecture'}; "
        f"this collection runs Ubuntu on {' or '.join(SUPPORTED_ARCHITECTURES)} instance types."
    )


def offered_instance_types(
    ec2: Any,
    region: str,
    instance_types: list[str],
    location_type: str = "region",
    zones: list[str] | None = None,
) -> dict[str, set[str]]:
    """Instance type -> locations (the region, or its zones) where it is offered."""
    offered: dict[str, set[str]] = {t: set() for t in instance_types}
    for chunk in _chunks(sorted(set(instance_types))):
        filters = [{"Name": "instance-type", "Values": chunk}]
        if zones and location_type == "availability-zone":
            filters.append({"Name": "location", "Values": list(zones)})
        for offer in paginate(ec2, "describe_instance_type_offerings", "InstanceTypeOfferings",
                              LocationType=location_type, Filters=filters):
            offered.setdefault(offer["InstanceType"], set()).add(offer["Location"])
    return offered


def not_offered(instance_type: str, region: str) -> AwsSpotError:
    return AwsSpotError(
        f"instance type {instance_type} is not offered in {region}. "
        f"Pick another type for {region}, or another region.",
        region,
    )


# --------------------------------------------------------------------------- images
def describe_images(ec2: Any, image_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Image id -> DescribeImages entry; ids that do not exist are left out."""
    if not image_ids:
        return {}
    try:
        images = ec2.describe_images(ImageIds=sorted(set(image_ids)), aws_retry=True)["Images"]
    except Exception as exc:  # pylint: disable=broad-except
        if error_code(exc) not in ("InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable"):
            raise
        # one bad id spoils the batch: ask one by one to tell which
        images = []
        for image_id in sorted(set(image_ids)):
            try:
                images += ec2.describe_images(ImageIds=[image_id], aws_retry=True)["Images"]
            except Exception as inner:  # pylint: disable=broad-except
                if error_code(inner) not in ("InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable"):
                    raise
    return {image["ImageId"]: image for image in images}


def describe_image(ec2: Any, region: str, image_id: str) -> dict[str, Any]:
    image = describe_images(ec2, [image_id]).get(image_id)
    if image is None:
        raise AwsSpotError(f"image {image_id} does not exist in {region} (AMI ids differ per region).", region)
    return _image_info(image, "given")


def _ssm_image_ids(ssm: Any, release: str, architectures: list[str]) -> dict[str, str]:
    """Architecture -> AMI id from Canonical's SSM parameters (absent when unreadable)."""
    names = {ssm_parameter_name(release, arch): arch for arch in architectures}
    try:
        result = ssm.get_parameters(Names=sorted(names), aws_retry=True)
    except Exception as exc:  # pylint: disable=broad-except
        # AccessDenied, or SSM unreachable in this partition: fall back to DescribeImages
        if error_code(exc) is None:
            raise
        return {}
    return {names[p["Name"]]: p["Value"] for p in result.get("Parameters", []) if p["Name"] in names}


def _newest_by_name(ec2: Any, release: str, architecture: str) -> dict[str, Any] | None:
    result = ec2.describe_images(
        Owners=[CANONICAL_OWNER_ID],
        Filters=[
            {"Name": "name", "Values": [image_name_pattern(release, architecture)]},
            {"Name": "architecture", "Values": [architecture]},
            {"Name": "state", "Values": ["available"]},
        ],
        aws_retry=True,
    )
    images = result.get("Images", [])
    return max(images, key=lambda i: (i.get("CreationDate") or "", i.get("Name") or "")) if images else None


def find_ubuntu_images(
    ssm: Any,
    ec2: Any,
    region: str,
    architectures: list[str],
    release: str,
    by_ssm: dict[str, str] | None = None,
    details: bool = True,
) -> dict[str, dict[str, Any]]:
    """Architecture -> newest Canonical Ubuntu image, SSM first, DescribeImages as fallback.

    Two calls in the common case (one GetParameters for every architecture, one
    DescribeImages for the ids it names); ``by_ssm`` passes parameters already read.
    Without ``details`` the SSM answer alone is used when it covers every architecture
    (no name or creation date then: one round trip instead of two).
    """
    if release not in _RELEASE_INFO:
        raise AwsSpotError(f"unsupported Ubuntu release {release}; choose one of {', '.join(UBUNTU_RELEASES)}.")
    found: dict[str, dict[str, Any]] = {}
    if by_ssm is None:
        by_ssm = _ssm_image_ids(ssm, release, architectures)
    by_ssm = {arch: image_id for arch, image_id in by_ssm.items() if arch in architectures}
    if not details and set(by_ssm) == set(architectures):
        # Canonical's own parameter, named by release and architecture: its id is enough
        # to launch, and saves a round trip (EC2 refuses the launch if it were wrong).
        return {arch: {"image_id": image_id, "name": None, "architecture": arch, "creation_date": None,
                       "owner_id": CANONICAL_OWNER_ID, "source": "ssm"} for arch, image_id in by_ssm.items()}
    described = describe_images(ec2, list(by_ssm.values()))
    for arch, image_id in by_ssm.items():
        image = described.get(image_id)
        if image and image.get("Architecture") == arch and image.get("OwnerId") == CANONICAL_OWNER_ID:
            found[arch] = _image_info(image, "ssm")
    for arch in architectures:
        if arch in found:
            continue
        image = _newest_by_name(ec2, release, arch)
        if image is None:
            raise AwsSpotError(
                f"no Ubuntu {release} {arch} image from Canonical ({CANONICAL_OWNER_ID}) found in {region}; "
                "give an image id for this region instead.",
                region,
            )
        found[arch] = _image_info(image, "describe_images")
    return found


# --------------------------------------------------------------------------- a whole region
def resolve_region(
    ec2: Any,
    ssm: Any,
    region: str,
    architectures: list[str] | None = None,
    release: str = DEFAULT_RELEASE,
    instance_types: list[str] | None = None,
    image_id: str | None = None,
    details: bool = True,
    check_offered: bool = True,
) -> dict[str, Any]:
    """Images and instance-type architectures for one region, checked against each other.

    Without ``check_offered`` the caller checks the offerings itself (``spot_cluster``
    reads them per zone anyway: one call instead of two).

    Returns ``{"images": {arch: info}, "instance_types": {type: {"architecture", "image_id"}}}``.
    Raises AwsSpotError naming region, type, AMI and both architectures on a mismatch,
    an unknown type, a type not offered in the region, or no image found.
    """
    instance_types = list(dict.fromkeys(instance_types or []))
    architectures = list(architectures if architectures is not None else SUPPORTED_ARCHITECTURES)
    for arch in architectures:
        if arch not in SUPPORTED_ARCHITECTURES:
            raise AwsSpotError(f"unsupported architecture {arch}; choose from {', '.join(SUPPORTED_ARCHITECTURES)}.")

    if release not in _RELEASE_INFO:
        raise AwsSpotError(f"unsupported Ubuntu release {release}; choose one of {', '.join(UBUNTU_RELEASES)}.")
    type_arches: dict[str, list[str]] = {}
    offered: dict[str, set[str]] = {}
    given: dict[str, Any] | None = None
    by_ssm: dict[str, str] | None = None
    # Independent look-ups go out together: one round trip instead of four. The SSM
    # parameters of every architecture are read at once (one call either way), since
    # the instance types' architectures are not known yet.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        f_types = pool.submit(instance_type_architectures, ec2, instance_types) if instance_types else None
        f_offer = (pool.submit(offered_instance_types, ec2, region, instance_types)
                   if instance_types and check_offered else None)
        f_given = pool.submit(describe_image, ec2, region, image_id) if image_id else None
        ssm_arches = list(SUPPORTED_ARCHITECTURES) if instance_types else architectures
        f_ssm = pool.submit(_ssm_image_ids, ssm, release, ssm_arches) if not image_id else None
        if f_ssm:
            by_ssm = f_ssm.result()
        if f_types:
            type_arches = f_types.result()
        if f_offer:
            offered = f_offer.result()
        if f_given:
            given = f_given.result()

    chosen: dict[str, str] = {}
    for itype in instance_types:
        chosen[itype] = pick_architecture(itype, type_arches[itype])
        if check_offered and region not in offered.get(itype, set()):
            raise not_offered(itype, region)

    if given is not None:
        images = {given["architecture"]: given}
        for itype, arch in chosen.items():
            if arch != given["architecture"]:
                raise AwsSpotError(
                    f"instance type {itype} is {arch} but image {given['image_id']} ({given['name']}) is "
                    f"{given['architecture']}: give an {arch} image for {region} or a "
                    f"{given['architecture']} instance type.",
                    region,
                )
    else:
        wanted = list(dict.fromkeys(architectures + list(chosen.values())))
        images = find_ubuntu_images(ssm, ec2, region, wanted, release, by_ssm=by_ssm, details=details)

    return {
        "images": images,
        "instance_types": {
            itype: {"architecture": arch, "image_id": images[arch]["image_id"]} for itype, arch in chosen.items()
        },
    }


# --------------------------------------------------------------------------- the module's work
def lookup(
    module: Any,
    regions: list[str],
    architectures: list[str] | None = None,
    release: str = DEFAULT_RELEASE,
    instance_types: list[str] | None = None,
    image_ids: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What ami_arch_lookup returns; raises AwsSpotError listing every region's problem."""
    regions = list(dict.fromkeys(r.strip() for r in regions))
    image_ids = dict(image_ids or {})
    problems = []
    if not regions or "" in regions:
        problems.append("regions must list at least one region, without empty names")
    if instance_types is not None and (not instance_types or "" in instance_types):
        problems.append("instance_types, when given, must list at least one instance type")
    stray = sorted(set(image_ids) - set(regions))
    if stray:
        problems.append(f"image_ids names region(s) not in regions: {', '.join(stray)}")
    if problems:
        raise AwsSpotError("; ".join(problems) + ".")

    home = module.region or regions[0]
    check_regions(region_client(module, "ec2", home), regions)

    def one_region(region: str) -> dict[str, Any]:
        return resolve_region(
            region_client(module, "ec2", region),
            region_client(module, "ssm", region),
            region,
            architectures=architectures,
            release=release,
            instance_types=instance_types,
            image_id=image_ids.get(region),
        )

    results, errors = run_per_region(regions, one_region)
    if errors:
        lines = []
        for region in regions:
            if region in errors:
                text = str(errors[region])
                lines.append(text if text.startswith(f"{region}:") else f"{region}: {text}")
        raise AwsSpotError(
            f"ami_arch_lookup failed in {len(errors)} of {len(regions)} region(s): " + " | ".join(lines),
            details={"failed_regions": sorted(errors)},
        )
    out: dict[str, Any] = {"images": {r: results[r]["images"] for r in regions}}
    if instance_types:
        out["instance_types"] = {r: results[r]["instance_types"] for r in regions}
    return out
