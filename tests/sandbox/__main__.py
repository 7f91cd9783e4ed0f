"""The offline demo: a whole Bacalhau cluster on spot instances, with no AWS account.

``make sandbox`` (as root) runs, on this machine only:

1. the AWS emulator (``tests/emulator``) on loopback;
2. Linux test hosts (``tests/hosts/testhosts.sh``: systemd-nspawn machines with sshd on a
   private bridge) and the stand-in Bacalhau release served on loopback (``tests/roles/env.sh``);
3. the binding: the emulator's address pool is set to the test hosts' addresses, so every
   instance the emulator launches gets one of them as its public IP. The unchanged
   ``playbooks/create.yml``, the aws_ec2 inventory and SSH then reach a real machine. moto's
   own fake addresses (54.x) are never handed out, so never dialled;
4. the real ``playbooks/create.yml`` for a demo cluster in two "regions" (it ends with a smoke job,
   an ``ops`` job that must run a container in the real Docker of every compute node), a second run
   that must change nothing, a user's first job (``bacalhau docker run --wait`` on the orchestrator,
   over SSH) whose output is printed, ``create.yml`` against a compute node whose Docker is stopped
   (it must fail naming that node and its region), ``playbooks/status.yml``, a spot interruption (the emulator reclaims an
   instance and its test host powers off, as a reclaimed instance goes away) that
   ``status.yml -e reap_disconnected=true`` must report and whose node the orchestrator must
   then forget, ``playbooks/create.yml`` again to replace it (the test host comes back as a
   new machine at the address the emulator hands out again), and ``playbooks/destroy.yml``;
5. teardown of everything it started (``--keep`` leaves it all up and prints how to clean up).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.emulator import Emulator
from tests.emulator.client import SCRUBBED_VARS
from tests.policy import actions_not_in_policy
from tests.secrets import key_body, leaked

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("BACALHAU_SANDBOX_STATE", "/tmp/bacalhau-sandbox"))
HOSTS_STATE = STATE / "testhosts"
ROLES_DIR = STATE / "roles-test"
CLUSTER = "sandbox"
# The image tests/hosts/testhosts.sh imports into every test host's Docker (Debian's busybox-static).
LOCAL_IMAGE = "localhost/testhost/busybox:1.35"
# tests/hosts/testhosts.sh's network: 10.213.<SUBNET>.0/24
SUBNET = os.environ.get("BACALHAU_TESTHOSTS_SUBNET", "7")
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def run(cmd: list[str], env: dict[str, str] | None = None, check: bool = True, capture: bool = False,
        timeout: int = 1800, quiet: bool = False) -> subprocess.CompletedProcess:
    print("$ " + " ".join(cmd), flush=True)
    if capture:
        proc = subprocess.run(cmd, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)
        # quiet: only the recap (a -vvv run is for the log file, not the screen)
        sys.stdout.write(proc.stdout[proc.stdout.rfind("PLAY RECAP"):] if quiet and "PLAY RECAP" in proc.stdout
                         else proc.stdout)
    else:
        proc = subprocess.run(cmd, cwd=REPO, env=env, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise SystemExit(f"sandbox: command failed ({proc.returncode}): {' '.join(cmd)}")
    return proc


def env_for_tools() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_VARS}
    env["BACALHAU_TESTHOSTS_STATE"] = str(HOSTS_STATE)
    env["BACALHAU_ROLES_TEST_DIR"] = str(ROLES_DIR)
    env["PYTHON"] = sys.executable
    return env


def playbook_env(emulator: Emulator) -> dict[str, str]:
    env = env_for_tools()
    env.update(emulator.env)
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["ANSIBLE_FORCE_COLOR"] = env.get("ANSIBLE_FORCE_COLOR", "1" if sys.stdout.isatty() else "0")
    return env


def host_addresses() -> list[str]:
    inventory = (HOSTS_STATE / "inventory.yml").read_text()
    return re.findall(r"ansible_host:\s*([0-9.]+)", inventory)


def write_cluster_vars(hosts: int) -> Path:
    """The demo cluster: an orchestrator and compute nodes over two regions, two architectures."""
    computes = hosts - 1
    east = (computes + 1) // 2
    west = computes - east
    key = HOSTS_STATE / "id_ed25519"
    cluster = {
        "cluster_name": CLUSTER,
        "cluster_regions": [
            {"region": "us-east-1", "count": east, "instance_types": ["t3.small", "t3a.small"]},
            {"region": "eu-west-1", "count": west, "instance_types": ["t4g.small", "m7g.medium"]},
        ],
        "cluster_orchestrator": {"mode": "managed", "region": "us-east-1", "instance_type": "t3.small",
                                 "market": "spot"},
        "cluster_ssh_public_key_file": f"{key}.pub",
        "cluster_ssh_private_key_file": str(key),
        # the controller reaches the test hosts over the bridge
        "cluster_ssh_cidrs": [f"10.213.{SUBNET}.0/24"],
        "cluster_api_cidrs": [],
        # the emulator hands out the test hosts' addresses; nothing else may be dialled
        "cluster_allowed_addresses": rf"^10\.213\.{SUBNET}\.[0-9]+$",
        # no registry is reachable: the smoke job uses the image every test host has locally
        "cluster_smoke_job_image": LOCAL_IMAGE,
        # TLS on the orchestrator link and the API key are the defaults (cluster_tls,
        # cluster_api_auth): the demo runs with both, as a user's cluster does.
    }
    path = STATE / "cluster.yml"
    path.write_text("# Written by `make sandbox`: the demo cluster.\n" + json.dumps(cluster, indent=2) + "\n")
    return path


def recap(output: str) -> dict[str, dict[str, int]]:
    return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                         "failed": int(m.group(5))} for m in RECAP.finditer(output)}


def teardown(emulator: Emulator | None) -> None:
    say("Tearing down: test hosts, release server, emulator")
    run([str(REPO / "tests/roles/env.sh"), "down"], env=env_for_tools(), check=False)
    if emulator:
        emulator.stop()
    shutil.rmtree(STATE, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make sandbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=3, help="test hosts: 1 orchestrator + N-1 compute nodes")
    parser.add_argument("--keep", action="store_true", help="leave the cluster up (prints how to clean up)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("sandbox: run as root (the test hosts are systemd-nspawn machines in network namespaces)")
    if args.hosts < 3:
        raise SystemExit("sandbox: needs at least 3 hosts (an orchestrator and a compute node in each of 2 regions)")

    STATE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    emulator = None
    try:
        say("Starting the AWS emulator (loopback only)")
        emulator = Emulator.start()
        print(f"emulator: {emulator.url}")

        say(f"Booting {args.hosts} Linux test hosts and serving the stand-in Bacalhau release")
        run([str(REPO / "tests/roles/env.sh"), "up", str(args.hosts)], env=env_for_tools())
        addresses = host_addresses()
        print(f"test hosts: {', '.join(addresses)}")

        say("Binding: emulated instances get the test hosts' addresses as their public IPs")
        print(json.dumps(emulator.address_pool(addresses)))

        cluster_vars = write_cluster_vars(args.hosts)
        release_vars = ROLES_DIR / "vars.yml"
        env = playbook_env(emulator)
        book = [str(Path(sys.executable).parent / "ansible-playbook")]
        extra = ["-e", f"@{cluster_vars}", "-e", f"@{release_vars}"]

        say("ansible-playbook playbooks/create.yml  (spot instances in 2 regions, then Bacalhau on them)")
        first = run(book + ["playbooks/create.yml", *extra], env=env, capture=True)

        computes = _compute_count(args.hosts)
        if f"The smoke job ran on all {computes} compute node(s)." not in first.stdout:
            raise SystemExit("sandbox: create.yml did not prove that every compute node runs a job")
        if len(re.findall(r"^\s*\S+\s+i-\S+\s+compute\s.*\s+yes\s*$", first.stdout, re.M)) != computes:
            raise SystemExit("sandbox: the cluster table does not show every compute node with a job run")

        say("ansible-playbook playbooks/create.yml -vvv again: nothing may change (the smoke job runs again), "
            "and no secret may appear in its whole output")
        second = run(book + ["playbooks/create.yml", "-vvv", *extra], env=env, capture=True, quiet=True)
        log_path = REPO / "build" / "sandbox" / "create-vvv.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(second.stdout)
        cluster_dir = Path.home() / ".config/bacalhau.aws_spot" / CLUSTER
        secrets = {"the auth token": [(cluster_dir / "auth-token").read_text().strip()],
                   "the API key": [(cluster_dir / "api-key").read_text().strip()],
                   "the CA key": key_body(str(cluster_dir / "tls" / "ca.key")),
                   "the orchestrator's key": key_body(str(cluster_dir / "tls" / "orchestrator.key"))}
        found = leaked(second.stdout, secrets)
        if found:
            raise SystemExit(f"sandbox: create.yml -vvv printed {', '.join(found)} (output in {log_path})")
        print(f"{len(second.stdout.splitlines())} lines of -vvv output (in {log_path}): "
              f"no token, API key or private key in them")
        changed = {host: r["changed"] for host, r in recap(second.stdout).items() if r["changed"]}
        if changed:
            raise SystemExit(f"sandbox: the second create.yml changed something: {changed}")
        if f"The smoke job ran on all {computes} compute node(s)." not in second.stdout:
            raise SystemExit("sandbox: the second create.yml did not run the smoke job again")

        orchestrator = _live_instances(emulator, "us-east-1", "orchestrator")[0]
        orch_ip = _public_ip(emulator, "us-east-1", orchestrator)
        say("The compute node in eu-west-1 joined over TLS: the orchestrator's NATS port requires it")
        west = _public_ip(emulator, "eu-west-1", _live_instances(emulator, "eu-west-1", "compute")[0])
        # NATS (and the stand-in) greets in plain text with INFO, then the client must start TLS
        # when INFO says tls_required; a compute node that joined was let in only that way.
        info = _ssh(west, f"timeout 5 bash -c 'exec 3<>/dev/tcp/{orch_ip}/4222; head -n1 <&3'", addresses)
        print(info.stdout.strip())
        if '"tls_required":true' not in info.stdout.replace(" ", ""):
            raise SystemExit(f"sandbox: the orchestrator's NATS port does not require TLS: {info.stdout!r} {info.stderr!r}")
        say("Your first job, as the README tells you: `bacalhau docker run` on the orchestrator, over SSH")
        # `docker run --wait` prints the job's events, not its output (cmd/cli/docker/docker_run.go):
        # take the id, then read the output from `job describe` as a user does.
        # The API takes the cluster's key (API.Auth.Users), as BACALHAU_API_KEY (cmd/util/api.go).
        key = (Path.home() / ".config/bacalhau.aws_spot" / CLUSTER / "api-key").read_text().strip()
        submitted = _ssh(orch_ip, f"BACALHAU_API_KEY={key} bacalhau docker run --id-only {LOCAL_IMAGE} -- sh -c "
                                  "'echo hello from a Bacalhau job on $(uname -m)'", addresses)
        job_id = submitted.stdout.strip()
        if submitted.returncode != 0 or not job_id.startswith("j-"):
            raise SystemExit(f"sandbox: bacalhau docker run failed ({submitted.returncode}): {submitted.stderr}")
        described = _ssh(orch_ip, f"BACALHAU_API_KEY={key} bacalhau job describe {job_id} --output json", addresses)
        job = json.loads(described.stdout or "{}")
        outputs = [(e.get("RunOutput") or {}).get("Stdout", "") for e in (job.get("Executions") or {}).get("Items", [])]
        print(f"job {job_id}: {job.get('Job', {}).get('State', {}).get('StateType')}; its output:")
        print("".join(outputs))
        if job.get("Job", {}).get("State", {}).get("StateType") != "Completed" or \
                not any("hello from a Bacalhau job on" in o for o in outputs):
            raise SystemExit(f"sandbox: the batch job {job_id} did not complete with its output: {described.stdout[-2000:]}")

        say("A compute node whose Docker is stopped: create.yml must fail naming it (Docker left to the user)")
        broken = _live_instances(emulator, "eu-west-1", "compute")[0]
        broken_ip = _public_ip(emulator, "eu-west-1", broken)
        _ssh(broken_ip, "sudo systemctl stop docker.socket docker.service", addresses)
        failed = run(book + ["playbooks/create.yml", *extra, "-e", "bacalhau_compute_docker_install=false"],
                     env=env, capture=True, check=False)
        if failed.returncode == 0:
            raise SystemExit(f"sandbox: create.yml passed although Docker is stopped on {broken}")
        if not re.search(rf"did not run on 1 of {computes} compute node\(s\):\s+{broken} \(eu-west-1,", failed.stdout):
            raise SystemExit(f"sandbox: create.yml's failure does not name {broken} in eu-west-1")
        print(f"create.yml failed as it must, naming {broken} (eu-west-1)")
        _ssh(broken_ip, "sudo systemctl start docker.service", addresses)
        run(book + ["playbooks/create.yml", *extra], env=env, capture=True)

        say("ansible-playbook playbooks/status.yml")
        run(book + ["playbooks/status.yml", *extra], env=env)

        say("A spot interruption in eu-west-1: the emulator reclaims the instance, its test host powers off")
        victim = _live_instances(emulator, "eu-west-1")[:1]
        if not victim:
            raise SystemExit("sandbox: no instance in eu-west-1 to interrupt")
        address = _public_ip(emulator, "eu-west-1", victim[0])
        print(json.dumps(emulator.interrupt("eu-west-1", victim)))
        _power_off(address, addresses)

        say("ansible-playbook playbooks/status.yml -e reap_disconnected=true")
        after = run(book + ["playbooks/status.yml", *extra, "-e", "reap_disconnected=true"], env=env, capture=True)
        if f"Spot interruptions seen: {victim[0]}" not in after.stdout:
            raise SystemExit(f"sandbox: status.yml did not report the interruption of {victim[0]}")
        if "of which without an instance" not in after.stdout:
            raise SystemExit("sandbox: status.yml did not see the reclaimed node disconnected")

        say("ansible-playbook playbooks/status.yml: the reclaimed node is forgotten")
        final = run(book + ["playbooks/status.yml", *extra], env=env, capture=True)
        if "Disconnected nodes: none" not in final.stdout:
            raise SystemExit("sandbox: the orchestrator still lists a disconnected node after reap_disconnected")

        say("ansible-playbook playbooks/create.yml: the replacement (its test host comes back as a new machine)")
        run([str(REPO / "tests/hosts/testhosts.sh"), "up", str(args.hosts)], env=env_for_tools())
        run(book + ["playbooks/create.yml", *extra], env=env)
        replaced = [i for i in _live_instances(emulator, "eu-west-1") if i not in victim]
        if len(replaced) != 1:
            raise SystemExit(f"sandbox: create.yml did not replace {victim[0]} (eu-west-1 has {replaced})")

        del first
        if args.keep:
            say("Left up (--keep)")
            print(f"""The cluster is up. Emulator: {emulator.url} (pid {emulator.process.pid}).
  export {' '.join(f'{k}={v}' for k, v in emulator.env.items())}
  ansible-playbook playbooks/status.yml -e @{cluster_vars} -e @{release_vars}
Clean up with:
  ansible-playbook playbooks/destroy.yml -e @{cluster_vars}
  BACALHAU_TESTHOSTS_STATE={HOSTS_STATE} BACALHAU_ROLES_TEST_DIR={ROLES_DIR} tests/roles/env.sh down
  kill {emulator.process.pid}; rm -rf {STATE} ~/.config/bacalhau.aws_spot/{CLUSTER}""")
            emulator = None  # keep it running
            return 0

        say("ansible-playbook playbooks/destroy.yml")
        run(book + ["playbooks/destroy.yml", "-e", f"@{cluster_vars}"], env=env)
        left = [i for r in ("us-east-1", "eu-west-1")
                for i in _live_instances(emulator, r)]
        if left:
            raise SystemExit(f"sandbox: instances left after destroy: {left}")
        missing = actions_not_in_policy(emulator.calls()["log"])
        if missing:
            raise SystemExit(f"sandbox: docs/iam-policy.json does not allow {sorted(missing)}, which the playbooks called")
        print(f"\nsandbox: done in {time.monotonic() - started:.0f} s: cluster created, unchanged on re-run, "
              "healthy, no secret in a -vvv run, compute nodes joined over TLS, every compute node ran the smoke job, "
              "your first job printed its output, a node without Docker named, interruption reported, its node "
              "forgotten and replaced, destroyed.")
        return 0
    finally:
        if emulator is not None or not args.keep:
            teardown(emulator)


def _ec2(emulator: Emulator, region: str):
    import boto3

    return boto3.client("ec2", region_name=region, endpoint_url=emulator.url,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _public_ip(emulator: Emulator, region: str, instance_id: str) -> str:
    instance = _ec2(emulator, region).describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return instance.get("PublicIpAddress") or ""


def _compute_count(hosts: int) -> int:
    return hosts - 1


def _ssh(address: str, command: str, ours: list[str]) -> subprocess.CompletedProcess:
    """Run a command on one of this sandbox's own test hosts, as the cluster's SSH user."""
    if address not in ours:  # only ever one of our own test hosts
        raise SystemExit(f"sandbox: {address!r} is not one of this sandbox's test hosts")
    key = HOSTS_STATE / "id_ed25519"
    cmd = ["ssh", "-n", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
           f"ubuntu@{address}", command]
    # the API key never appears in output
    print("$ " + re.sub(r"(BACALHAU_API_KEY=)\S+", r"\1<the cluster's API key>", " ".join(cmd[-2:])), flush=True)
    return subprocess.run(cmd, text=True, capture_output=True, timeout=300)


def _power_off(address: str, ours: list[str]) -> None:
    """Power the test host at ``address`` off (a reclaimed instance's machine goes away); wait until it is gone."""
    _ssh(address, "sudo systemctl poweroff", ours)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, 22), timeout=1).close()
        except OSError:
            print(f"test host {address} is off")
            return
        time.sleep(0.5)
    raise SystemExit(f"sandbox: test host {address} did not power off")


def _live_instances(emulator: Emulator, region: str, role: str | None = None) -> list[str]:
    """The cluster's instances in the region that are not ended (of one role, if given), sorted."""
    filters = [{"Name": "tag:bacalhau:cluster", "Values": [CLUSTER]},
               {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    if role:
        filters.append({"Name": "tag:bacalhau:role", "Values": [role]})
    reservations = _ec2(emulator, region).describe_instances(Filters=filters)["Reservations"]
    return sorted(i["InstanceId"] for r in reservations for i in r["Instances"])


if __name__ == "__main__":
    sys.exit(main())
