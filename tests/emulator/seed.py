"""Ubuntu images and Canonical's SSM parameters, seeded into the emulator.

moto ships no Ubuntu 22.04/24.04 images and no arm64 images, and none of the
``/aws/service/canonical/...`` public parameters. Real AWS has a different AMI id
for the same image in every region, and several dated builds ("serials") per
release; the newest is what ``.../stable/current/...`` points to. We mirror that:
ids are derived from (region, release, arch, serial) so they differ per region and
are stable across runs.

Names follow Canonical's scheme, e.g.
``ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250115``
(source: Canonical's "Find Ubuntu images on AWS" docs; 24.04 is published on
gp3 volumes, 22.04 on gp2 with the ``hvm-ssd`` prefix).
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone

CANONICAL_OWNER_ID = "099720109477"

# release -> (codename, name prefix, SSM volume segment)
RELEASES = {
    "24.04": ("noble", "ubuntu/images/hvm-ssd-gp3", "ebs-gp3"),
    "22.04": ("jammy", "ubuntu/images/hvm-ssd", "ebs-gp2"),
}
# EC2 architecture -> Canonical's name for it
ARCHES = {"x86_64": "amd64", "arm64": "arm64"}
# Dated builds per release; the last one is "current".
SERIALS = ("20250601", "20251015", "20260212")


def ami_id(region: str, release: str, arch: str, serial: str) -> str:
    digest = hashlib.sha256(f"{region}/{release}/{arch}/{serial}".encode()).hexdigest()
    return "ami-" + digest[:17]


def ssm_parameter_name(release: str, arch: str) -> str:
    _codename, _prefix, volume = RELEASES[release]
    return (
        f"/aws/service/canonical/ubuntu/server/{release}/stable/current/"
        f"{ARCHES[arch]}/hvm/{volume}/ami-id"
    )


def ubuntu_images(region: str) -> list[dict]:
    """Every seeded Ubuntu image of one region, as moto's Ami() keyword arguments."""
    images = []
    for release, (codename, prefix, _volume) in RELEASES.items():
        for arch, deb_arch in ARCHES.items():
            for serial in SERIALS:
                created = datetime.strptime(serial, "%Y%m%d").replace(tzinfo=timezone.utc)
                name = f"{prefix}/ubuntu-{codename}-{release}-{deb_arch}-server-{serial}"
                images.append(
                    {
                        "ami_id": ami_id(region, release, arch, serial),
                        "name": name,
                        "description": f"Canonical, Ubuntu, {release}, {deb_arch} {codename} image",
                        "owner_id": CANONICAL_OWNER_ID,
                        "public": True,
                        "virtualization_type": "hvm",
                        "architecture": arch,
                        "state": "available",
                        "creation_date": created,
                        "hypervisor": "xen",
                        "root_device_type": "ebs",
                        "root_device_name": "/dev/sda1",
                        "sriov": "simple",
                        "region_name": region,
                        "boot_mode": "uefi-preferred",
                    }
                )
    return images


def current_ubuntu_parameters(region: str) -> dict[str, str]:
    """SSM parameter name -> AMI id of the newest build, for one region."""
    return {
        ssm_parameter_name(release, arch): ami_id(region, release, arch, SERIALS[-1])
        for release in RELEASES
        for arch in ARCHES
    }

