"""The offline demo: a whole Bacalhau cluster on spot instances, with no AWS account.

``make sandbox`` (as root) runs, on this machine only:

1. the AWS emulator (``tests/emulator``) on loopback;
2. Linux test hosts (``tests/hosts/testhosts.sh``: systemd-nspawn machines with sshd on a
   private bridge) and the stand-in Bacalhau release served on that bridge (``tests/roles/env.sh``);
3. the binding: the emulator's address pool is set to the test hosts' addresses, so every
   instance the emulator launches gets one of them as its public IP. The unchanged
   ``playbooks/create.yml``, the aws_ec2 inventory and SSH then reach a real machine. moto's
   own fake addresses (54.x) are never handed out, so never dialled;
4. the real ``playbooks/create.yml`` for a demo cluster in two "regions" (it ends with a smoke job,
   an ``ops`` job that must run a container in the real Docker of every compute node), a second run
   that must change nothing, a user's first job (``bacalhau docker run --wait`` on the orchestrator,
   over SSH) whose output is printed, ``create.yml`` against a compute node whose Docker is stopped
   (it must fail naming that node and its region), ``playbooks/status.yml``;
5. the spot life of the eu-west-1 node (the emulator writes each instance's metadata for its test
   host's IMDS stand-in, so the roles install the spot watcher and notices reach it): a batch job
   runs on it, constrained to it, when the emulator gives it an interruption notice; Bacalhau must
   stop on it within 10 s and the orchestrator list it DISCONNECTED at once; the job ends as
   Bacalhau's rules say (its execution failed as lost about 15 s later; no other node matches its
   constraint, so it fails); when the notice's time is up the instance is reclaimed and its test
   host powers off; ``status.yml`` shows the node disconnected; ``playbooks/heal.yml`` makes the
   orchestrator forget it and launches a replacement that runs the smoke job (a test host comes
   back as a new machine for the address the emulator hands out). Then eu-west-1 goes dry (capacity
   faults for all its types) and its node is interrupted: ``heal.yml`` puts the replacement in the
   overflow region us-west-2 (tagged ``bacalhau:overflow-for=eu-west-1``, smoke job); eu-west-1
   recovers: ``heal.yml`` launches a node there (smoke job), then terminates the overflow node.
   One test host stays spare for heal.yml's make-before-break. ``status.yml -e status_format=json``
   then shows what the cluster cost per pool and in total, its interruptions counted (issue 21);
6. the self-healing life (issue 20; needs ansible-rulebook and Java 17): the rulebook
   ``bacalhau.aws_spot.autoheal`` in the background, nobody running ``heal.yml``: a job runs on a node
   when its two-minute notice comes; the replacement is launched, CONNECTED, APPROVED and past its
   smoke job before the reclaim, and Bacalhau places the job again (timed, by phase); eu-west-1 goes
   dry and its node gets a notice: the rulebook spills over to us-west-2 on its own; eu-west-1
   recovers and the rulebook's tick brings the node home and lets the overflow node go. Then
   ``status.yml`` shows the cost report again, with every interruption, and ``playbooks/destroy.yml``;
7. teardown of everything it started (``--keep`` leaves it all up and prints how to clean up).
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
# tests/hosts/testhosts.sh's network: 10.213.<SUBNET>.0/24
SUBNET = os.environ.get("BACALHAU_TESTHOSTS_SUBNET", "7")
# The cluster's files on the controller (~/.config/bacalhau.aws_spot/<name>) are per cluster
# name: a sandbox beside another one (its own SUBNET) gets its own name.
CLUSTER = "sandbox" if SUBNET == "7" else f"sandbox{SUBNET}"
CLUSTER_DIR = Path.home() / ".config/bacalhau.aws_spot" / CLUSTER  # the sandbox cluster's state on the controller
HOME_REGION = "eu-west-1"  # the spot life happens to its node
OVERFLOW = {"region": "us-west-2", "instance_types": ["t4g.small", "t3.small"]}
REGIONS = ("us-east-1", "eu-west-1", OVERFLOW["region"])
SPARE_HOSTS = 1  # for heal.yml's make-before-break
NOTICE_SECONDS = 30  # the notice's time, shortened from EC2's two minutes
LOST = "Execution stop requested because node has disappeared"  # pkg/orchestrator/events.go
# The image every test host pulled at boot from its environment's registry (tests/hosts/testhosts.sh,
# Debian's busybox-static): pulled, it carries RepoDigests, so Bacalhau uses it without asking the
# registry again (pkg/docker/docker.go ImageDistribution). `testhosts.sh image` prints the name.
LOCAL_IMAGE = "registry.testhosts:5213/testhost/busybox:1.35"
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


def write_cluster_vars(hosts: int, spare: int = 0) -> Path:
    """The demo cluster: an orchestrator and compute nodes over two regions, two architectures,
    and an overflow region for heal.yml; ``spare`` test hosts are left out of the count (the
    sandbox keeps one: heal.yml makes a new node before it lets an old one go, so there must be
    an address for it)."""
    computes = hosts - 1 - spare
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
        # where heal.yml puts what a dry home region cannot hold (none of cluster_regions)
        "cluster_overflow_regions": [OVERFLOW],
        "cluster_ssh_public_key_file": f"{key}.pub",
        "cluster_ssh_private_key_file": str(key),
        # the controller reaches the test hosts over the bridge
        "cluster_ssh_cidrs": [f"10.213.{SUBNET}.0/24"],
        "cluster_api_cidrs": [],
        # the emulator hands out the test hosts' addresses; nothing else may be dialled
        "cluster_allowed_addresses": rf"^10\.213\.{SUBNET}\.[0-9]+$",
        # the image every test host pulled from the test world's registry
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
    parser.add_argument("--hosts", type=int, default=4,
                        help="test hosts: 1 orchestrator + N-2 compute nodes + 1 spare (for heal.yml's replacements)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster up (prints how to clean up)")
    parser.add_argument("--skip-spot-life", action="store_true",
                        help="leave out the spot life by heal.yml (replaced, spilled over, back home): straight to autoheal")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("sandbox: run as root (the test hosts are systemd-nspawn machines in network namespaces)")
    if args.hosts < 4:
        raise SystemExit("sandbox: needs at least 4 hosts (an orchestrator, a compute node in each of 2 regions, a spare)")

    STATE.mkdir(parents=True, exist_ok=True)
    if CLUSTER_DIR.exists():  # a sandbox stopped before its destroy.yml: its secrets and pool history
        print(f"sandbox: removing {CLUSTER_DIR}, left by an earlier sandbox that did not finish")
        shutil.rmtree(CLUSTER_DIR)
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
        # each test host's IMDS stand-in serves what the emulator writes here (spot notices
        # included); a terminated instance's test host powers off
        print(f"IMDS documents for the test hosts in {emulator.imds(str(HOSTS_STATE / 'imds'))['state_dir']}")

        cluster_vars = write_cluster_vars(args.hosts, spare=SPARE_HOSTS)
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

        interrupted: set[str] = set()
        if not args.skip_spot_life:
            interrupted |= _spot_life(emulator, book, extra, env, addresses, orch_ip, key, args.hosts)
        by_rulebook = _autoheal_life(emulator, cluster_vars, release_vars, env, addresses, orch_ip, key, args.hosts)
        interrupted |= by_rulebook
        _cost_report(book, extra, env, interrupted)

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

        say("ansible-playbook playbooks/destroy.yml -e destroy_forget_history=true  (the sandbox keeps nothing; "
            "a real cluster's pool history is kept for the next cluster of its name)")
        run(book + ["playbooks/destroy.yml", "-e", f"@{cluster_vars}", "-e", "destroy_forget_history=true"], env=env)
        if CLUSTER_DIR.exists():
            raise SystemExit(f"sandbox: destroy.yml left {CLUSTER_DIR}: {sorted(p.name for p in CLUSTER_DIR.iterdir())}")
        left = [i for r in REGIONS for i in _live_instances(emulator, r)]
        if left:
            raise SystemExit(f"sandbox: instances left after destroy: {left}")
        missing = actions_not_in_policy(emulator.calls()["log"])
        if missing:
            raise SystemExit(f"sandbox: docs/iam-policy.json does not allow {sorted(missing)}, which the playbooks called")
        print(f"\nsandbox: done in {time.monotonic() - started:.0f} s: cluster created, unchanged on re-run, "
              "healthy, no secret in a -vvv run, compute nodes joined over TLS, every compute node ran the smoke job, "
              "your first job printed its output, a node without Docker named, a running job's node interrupted and "
              "stopped in time, the job ended by Bacalhau's rules, healed: replaced, spilled over, back home, "
              + ("healed by the rulebook: a notice's replacement proven before the reclaim, spilled over and "
                 "back home on a tick, " if by_rulebook else "")
              + "the cost report, destroyed.")
        return 0
    finally:
        if emulator is not None or not args.keep:
            teardown(emulator)


def _spot_life(emulator: Emulator, book: list[str], extra: list[str], env: dict[str, str], addresses: list[str],
               orch_ip: str, key: str, hosts: int) -> set[str]:
    """The spot life of a node in HOME_REGION: a notice while a job runs on it, then heal.yml
    replaces it, spills it over to the overflow region while its home is dry, and brings it home."""
    bac = f"BACALHAU_API_KEY={key} bacalhau"
    computes = _compute_count(hosts)
    heal = book + ["playbooks/heal.yml", *extra]

    victim = _live_instances(emulator, HOME_REGION, "compute")[0]
    victim_ip = _public_ip(emulator, HOME_REGION, victim)
    say(f"A job runs on {victim} ({HOME_REGION}), constrained to it, when its spot interruption notice comes")
    submitted = _ssh(orch_ip, f"{bac} docker run --id-only --wait=false --constraints instance-id={victim} "
                              f"{LOCAL_IMAGE} -- sh -c 'sleep 60'", addresses)
    job_id = submitted.stdout.strip()
    if submitted.returncode != 0 or not job_id.startswith("j-"):
        raise SystemExit(f"sandbox: the long job was not submitted ({submitted.returncode}): {submitted.stderr}")
    node = _node_of(orch_ip, bac, victim, addresses)
    running = _poll(lambda: _job(orch_ip, bac, job_id, addresses),
                    lambda j: any(e["NodeID"] == node and _state(e) == "Running" for e in _executions(j)), 60)
    if not any(e["NodeID"] == node and _state(e) == "Running" for e in _executions(running)):
        raise SystemExit(f"sandbox: job {job_id} did not run on {victim}: {json.dumps(running)[-2000:]}")
    print(f"job {job_id}: its execution runs on {victim} (node {node})")

    t_notice = time.time()
    res = emulator.interrupt(HOME_REGION, [victim], notice_seconds=NOTICE_SECONDS)
    print(json.dumps(res))
    if res.get("in_imds") != [victim]:
        raise SystemExit(f"sandbox: the notice did not reach {victim}'s IMDS: {res}")
    seen = _poll(lambda: _nodes(orch_ip, bac, addresses).get(node, {}),
                 lambda n: n.get("ConnectionState", {}).get("Status") == "DISCONNECTED", 20, 0.2)
    t_seen = time.time()
    if seen.get("ConnectionState", {}).get("Status") != "DISCONNECTED":
        raise SystemExit(f"sandbox: the orchestrator does not list {node} as DISCONNECTED: {seen}")
    watcher = _journal(victim_ip, "bacalhau-spot-watcher", t_notice, addresses)
    if not any(e["MESSAGE"].startswith("interruption notice: action=terminate") for e in watcher):
        raise SystemExit(f"sandbox: the spot watcher on {victim} did not log the notice: {[e['MESSAGE'] for e in watcher]}")
    stopped = [e for e in _journal(victim_ip, "bacalhau", t_notice, addresses)
               if e["MESSAGE"].startswith("Stopped ") and e.get("UNIT") == "bacalhau.service"]
    if not stopped:
        raise SystemExit(f"sandbox: bacalhau.service was not stopped on {victim} after the notice")
    t_stopped = int(stopped[0]["__REALTIME_TIMESTAMP"]) / 1e6
    if not 0 < t_stopped - t_notice < 10:
        raise SystemExit(f"sandbox: bacalhau stopped {t_stopped - t_notice:.1f} s after the notice (must be < 10 s)")
    print(f"notice -> bacalhau stopped on {victim}: {t_stopped - t_notice:.1f} s; -> the orchestrator lists it "
          f"DISCONNECTED ({seen['ConnectionState'].get('LastError')!r}): {t_seen - t_notice:.1f} s")

    # Bacalhau's rules: the node's executions are failed as lost when the orchestrator re-evaluates
    # the node's jobs (pkg/orchestrator/nodes/reevaluator.go, 15 s after the node left); a batch job
    # is then placed again, but the only node its constraint matches is gone, so it fails
    # (pkg/orchestrator/errors.go; the default QueueTimeout 0 does not wait).
    ended = _poll(lambda: _job(orch_ip, bac, job_id, addresses),
                  lambda j: j["Job"]["State"]["StateType"] in ("Completed", "Failed", "Stopped"), 60)
    t_ended = time.time()
    lost = [e for e in _executions(ended) if e["NodeID"] == node]
    state = ended["Job"]["State"]
    print(f"job {job_id}: {state['StateType']} after {t_ended - t_notice:.0f} s: {state.get('Message', '')}")
    for e in _executions(ended):
        print(f"  execution {e['ID']} on {e['NodeID']}: {_state(e)}: {e['ComputeState'].get('Message', '')}")
    if [(_state(e), e["ComputeState"].get("Message")) for e in lost] != [("Failed", LOST)]:
        raise SystemExit(f"sandbox: the execution on {victim} did not fail as lost: {lost}")
    if len(_executions(ended)) != 1 or state["StateType"] != "Failed" or \
            not state.get("Message", "").startswith("not enough nodes to run job"):
        raise SystemExit(f"sandbox: job {job_id} did not end as Bacalhau's rules say (Failed, no other node "
                         f"matches instance-id={victim}): {state}")

    say(f"When the notice's time is up the emulator reclaims {victim}; its test host powers off")
    _reclaimed(emulator, HOME_REGION, victim, victim_ip, NOTICE_SECONDS + 30)

    say("ansible-playbook playbooks/status.yml: the orchestrator lists the reclaimed node as disconnected")
    status = run(book + ["playbooks/status.yml", *extra], env=env, capture=True)
    # bacalhau_nodes names a node by its instance id when it has one (_bacalhau/nodes.py name())
    named = f"(?:{re.escape(node)}|{re.escape(victim)})"
    if not re.search(rf"^\s*Disconnected nodes: .*{named}", status.stdout, re.M) or \
            not re.search(rf"of which without an instance: .*{named}", status.stdout):
        raise SystemExit(f"sandbox: status.yml does not show {node} disconnected, its instance gone")
    if not re.search(rf"Spot interruptions seen: .*{victim}", status.stdout):
        raise SystemExit(f"sandbox: status.yml does not report the interruption of {victim}")

    say("ansible-playbook playbooks/heal.yml: the orchestrator forgets the node, a replacement runs the smoke job")
    _hosts_back(hosts)
    healed = run(heal, env=env, capture=True)
    replacement = _one_new(emulator, HOME_REGION, {victim}, healed.stdout)
    _check_heal(healed.stdout, configured=replacement, forgotten=victim)  # named by its instance id (bacalhau_nodes gone)
    _check_connected(orch_ip, bac, computes, addresses, {replacement})

    say(f"{HOME_REGION} goes dry (no capacity for any type), and its node is interrupted")
    print(json.dumps(emulator.capacity_error(HOME_REGION)))
    replacement_ip = _public_ip(emulator, HOME_REGION, replacement)
    print(json.dumps(emulator.interrupt(HOME_REGION, [replacement], notice_seconds=5)))
    _reclaimed(emulator, HOME_REGION, replacement, replacement_ip, 40)

    say(f"ansible-playbook playbooks/heal.yml: the replacement goes to the overflow region {OVERFLOW['region']}")
    _hosts_back(hosts)
    spilled = run(heal, env=env, capture=True)
    if _live_instances(emulator, HOME_REGION, "compute"):
        raise SystemExit(f"sandbox: heal.yml launched in {HOME_REGION}, which has no capacity")
    overflow = _one_new(emulator, OVERFLOW["region"], set(), spilled.stdout)
    tags = _tags(emulator, OVERFLOW["region"], overflow)
    if tags.get("bacalhau:overflow-for") != HOME_REGION or tags.get("bacalhau:role") != "compute":
        raise SystemExit(f"sandbox: the overflow node {overflow} is not tagged as overflow for {HOME_REGION}: {tags}")
    # heal.yml's rows are "<region> <role>: ..." (spot_cluster's summary, one row per region and role)
    if not re.search(rf"^\s*{HOME_REGION} compute: ", spilled.stdout, re.M) or " - SHORT: " not in spilled.stdout:
        raise SystemExit(f"sandbox: heal.yml did not say that {HOME_REGION} is short")
    _check_heal(spilled.stdout, configured=overflow)
    _check_connected(orch_ip, bac, computes, addresses, {overflow})
    print(f"{overflow} runs in {OVERFLOW['region']}, tagged bacalhau:overflow-for={HOME_REGION}")

    say(f"{HOME_REGION} recovers; ansible-playbook playbooks/heal.yml moves the node home")
    print(json.dumps(emulator.clear_faults()))
    home = run(heal, env=env, capture=True)
    back = _one_new(emulator, HOME_REGION, {victim, replacement}, home.stdout)
    if _live_instances(emulator, OVERFLOW["region"]):
        raise SystemExit(f"sandbox: the overflow node {overflow} was not let go once {HOME_REGION} had room")
    _check_heal(home.stdout, configured=back, terminated=overflow)
    _check_connected(orch_ip, bac, computes, addresses, {back})
    print(f"{back} runs in {HOME_REGION} again; the overflow node {overflow} was terminated once {back} had joined")

    return {victim, replacement}


def _cost_report(book: list[str], extra: list[str], env: dict[str, str], interrupted: set[str]) -> None:
    """status.yml after the spot life: what the cluster cost, per pool and in total, from its pool history
    (issue 21), as a table and as JSON; every interruption of the sandbox counted (those the autoheal
    rulebook's heal let go after their warning too)."""
    say("ansible-playbook playbooks/status.yml -e status_format=json: what the cluster cost, per pool")
    out = STATE / "status.json"
    status = run(book + ["playbooks/status.yml", *extra, "-e", "status_format=json", "-e", f"status_file={out}"],
                 env=env, capture=True)
    report = json.loads(out.read_text())["cost"]
    total = report["total"]
    if total["interruptions"] < len(interrupted) or total["node_hours"] <= 0 or total["paid_usd"] is None:
        raise SystemExit(f"sandbox: the cost report does not show the {len(interrupted)} interruptions: {total}")
    if "What the cluster cost" not in status.stdout:
        raise SystemExit("sandbox: status.yml did not show what the cluster cost")
    print(json.dumps(total, indent=1))


# --------------------------------------------------------------------------- autoheal (issue 20)
RULEBOOK = os.environ.get("BACALHAU_RULEBOOK") or shutil.which("ansible-rulebook") or \
    shutil.which("ansible-rulebook", path=str(Path(sys.executable).parent))
AUTOHEAL_NOTICE_SECONDS = 120  # EC2's own two minutes: the replacement must be proven before the reclaim
# profile_tasks' line after each task banner: "Sunday 06 December 2026  08:55:01 +0000 (0:00:01.234)       0:00:05.678 ****"
_PROFILE = re.compile(r"(\d{2} \w+ \d{4}\s+\d{2}:\d{2}:\d{2}) [+-]\d{4} \(\d+:\d+:[\d.]+\)\s+(\d+):(\d+):([\d.]+)")
_BANNER = re.compile(r"(PLAY|TASK) \[([^\]]*)\]")
# heal.yml's phases: each starts with the first task of the play (or the task) named
_PHASE_STARTS = (
    ("reads", None),
    ("launch", ("TASK", "Replace, spill over")),
    ("inventory", ("TASK", "Add the new nodes to this run")),
    ("ssh_wait", ("PLAY", "Wait until every node answers over SSH")),
    ("configuration", ("PLAY", "Install and start the")),
    ("joined", ("PLAY", "Check that every compute node is connected")),
    ("smoke_job", ("PLAY", "Prove the cluster runs jobs")),
    ("after", ("PLAY", "Ask every node whether Bacalhau is alive")),
)


def _heal_phases(output: str) -> tuple[dict[str, float], float | None]:
    """heal.yml's phases (seconds) from profile_tasks' lines, and the heal's first task's wall-clock time."""
    play, task, marks, wall = "", "", [], None
    # the heal's lines come as a YAML list in the rulebook's log, coloured (ansible-rulebook's own
    # colours, whatever ANSIBLE_FORCE_COLOR says), with \r\n, long ones folded: plain, then unfolded
    output = re.sub(r"\x1b\[[0-9;]*m|\r", "", output)
    output = re.sub(r"\n[ \t]+(?![ \t]*- )", " ", output)
    for line in output.splitlines():
        banner = _BANNER.search(line)
        if banner:
            if banner.group(1) == "PLAY":
                play = banner.group(2)
            else:
                task = banner.group(2)
            continue
        stamp = _PROFILE.search(line)
        if stamp:
            elapsed = int(stamp.group(2)) * 3600 + int(stamp.group(3)) * 60 + float(stamp.group(4))
            marks.append((play, task, elapsed))
            if wall is None and play.startswith("Heal - read the cluster"):
                wall = time.mktime(time.strptime(stamp.group(1), "%d %B %Y %H:%M:%S")) - time.timezone - elapsed
    starts: list[tuple[str, float]] = []
    for name, where in _PHASE_STARTS:
        if where is None:
            starts.append((name, 0.0))
            continue
        kind, prefix = where
        hit = next((t for p, k, t in marks if (p if kind == "PLAY" else k).startswith(prefix)
                    and (not starts or t >= starts[-1][1])), None)
        if hit is not None:
            starts.append((name, hit))
    return {name: nxt - at for (name, at), (_n, nxt) in zip(starts, starts[1:]) if name != "after"}, wall


def _autoheal_life(emulator: Emulator, cluster_vars: Path, release_vars: Path, env: dict[str, str],
                   addresses: list[str], orch_ip: str, key: str, hosts: int) -> set[str]:
    """The rulebook bacalhau.aws_spot.autoheal in the background, nobody running heal.yml: a job runs on a
    compute node when its two-minute notice comes; the rulebook's heal launches, configures and proves the
    replacement before the reclaim, and Bacalhau places the job again. Then HOME_REGION goes dry and its
    node gets a notice: the rulebook spills it over to the overflow region; HOME_REGION recovers and the
    rulebook's tick brings the node home. Timed, by phase."""
    import yaml  # pylint: disable=import-outside-toplevel

    if not RULEBOOK or not shutil.which("java"):
        print("\nautoheal: skipped (ansible-rulebook 1.3.2 and Java 17 are not installed: make setup, "
              "tests/hosts/install-deps.sh)", flush=True)
        return set()
    bac = f"BACALHAU_API_KEY={key} bacalhau"
    computes = _compute_count(hosts)
    _settle_hosts(emulator, addresses, hosts)
    # ansible-rulebook's -e: one variables file, without @ (here the cluster's and the release's in one);
    # the source names it on every event for the heal to read (docs/heal.md, "Autoheal")
    variables = dict(yaml.safe_load(cluster_vars.read_text()), **(yaml.safe_load(release_vars.read_text()) or {}))
    rulebook_vars = STATE / "autoheal-cluster.yml"
    rulebook_vars.write_text(json.dumps(dict(variables, autoheal_tick_seconds=3600), indent=2) + "\n")
    say("ansible-rulebook -r bacalhau.aws_spot.autoheal in the background; nobody runs heal.yml from here on")
    rulebook = _Rulebook(rulebook_vars, env, STATE / "autoheal-rulebook.log")
    try:
        started = time.monotonic()
        said = _poll(rulebook.text, lambda t: f"Heal of cluster {CLUSTER}" in t or not rulebook.alive(), 300, 1)
        if f"Heal of cluster {CLUSTER}" not in said:
            raise SystemExit(f"sandbox: the rulebook's first tick did not heal: {said[-4000:]}")
        print(f"the rulebook's tick at start healed the (healthy) cluster in {time.monotonic() - started:.0f} s")
        first = _autoheal_notice(emulator, rulebook, addresses, orch_ip, bac, computes)
        overflow, reclaim = _autoheal_spill(emulator, rulebook, addresses, orch_ip, bac, computes, hosts)
    finally:
        rulebook.stop()

    # the home step: the rulebook again (started as systemd's Restart=always would), with a 30 s tick
    rulebook_vars.write_text(json.dumps(dict(variables, autoheal_tick_seconds=30), indent=2) + "\n")
    say(f"ansible-rulebook again, its tick every 30 s; {HOME_REGION} is still dry")
    rulebook = _Rulebook(rulebook_vars, env, STATE / "autoheal-rulebook-2.log")
    try:
        _autoheal_home(emulator, rulebook, addresses, orch_ip, bac, computes, hosts, overflow, reclaim)
    finally:
        rulebook.stop()
    for log in (STATE / "autoheal-rulebook.log", STATE / "autoheal-rulebook-2.log"):
        leaked_here = leaked(log.read_text(), {"the API key": [key]})
        if leaked_here:
            raise SystemExit(f"sandbox: the rulebook printed {', '.join(leaked_here)} (log {log})")
    return {first, reclaim[0]}


class _Rulebook:
    """ansible-rulebook -r bacalhau.aws_spot.autoheal in the background, its output in ``log`` (kept in
    build/sandbox/). stop() ends it and the heals it started, as systemd's KillMode=control-group does
    (ansible-runner starts each playbook in a session of its own), and waits for the heal lock."""

    def __init__(self, variables: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        rb_env = dict(env, ANSIBLE_FORCE_COLOR="0", ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")
        print(f"$ {RULEBOOK} -r bacalhau.aws_spot.autoheal -e {variables} -i inventory/localhost.yml  (log: {log})",
              flush=True)
        with open(log, "w", encoding="utf-8") as out:
            self.process = subprocess.Popen(
                [RULEBOOK, "-r", "bacalhau.aws_spot.autoheal", "-e", str(variables),
                 "-i", str(REPO / "inventory" / "localhost.yml"), "--print-events"],
                cwd=REPO, env=rb_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        _kill_group(self.process.pid)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            _kill_group(self.process.pid, 9)
            self.process.wait(30)
        state_dir = str(AUTOHEAL_DIR)
        for pid in Path("/proc").iterdir():  # the heals under way: autoheal_runner.py --state-dir <ours>
            try:
                argv = (pid / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"autoheal_runner.py") for a in argv) and state_dir.encode() in argv:
                try:
                    group = os.getpgid(int(pid.name))
                except (ProcessLookupError, ValueError):
                    continue
                if group != os.getpgrp():  # never this sandbox's own
                    _kill_group(group)
        lock = AUTOHEAL_DIR / "heal.lock"
        if lock.exists() and not _poll(lambda: _lock_free(lock), bool, 60, 0.5):
            raise SystemExit("sandbox: a heal still held the autoheal lock 60 s after the rulebook stopped")
        kept = REPO / "build" / "sandbox" / self.log.name
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.log, kept)


AUTOHEAL_DIR = CLUSTER_DIR / "autoheal"


def _kill_group(pgid: int, sig: int = 15) -> None:
    if pgid > 1:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _lock_free(path: Path) -> bool:
    import fcntl  # pylint: disable=import-outside-toplevel

    with open(path, "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def _settle_hosts(emulator: Emulator, addresses: list[str], hosts: int) -> None:
    """The test hosts of instances let go power off (seconds); then every host is brought back, for the
    addresses the emulator hands out again."""
    live = len([i for r in REGIONS for i in _live_instances(emulator, r)])
    _poll(lambda: sum(_answers(a) for a in addresses), lambda up: up <= live, 60, 1)
    # sshd gone is not off: a host is settled when it answers, or its systemd-nspawn has ended
    # (testhosts.sh counts a host shutting down as up, and would then wait for its sshd in vain)
    _poll(lambda: [a for a in addresses if _host_running(a) and not _answers(a)], lambda halting: not halting, 90, 1)
    _hosts_back(hosts)


def _host_running(address: str) -> bool:
    """The test host of ``address`` has a systemd-nspawn process (booting, up, or shutting down)."""
    pid_file = HOSTS_STATE / "hosts" / f"testhost{int(address.rsplit('.', 1)[1]) - 10}" / "pid"
    pid = pid_file.read_text().strip() if pid_file.exists() else ""
    return bool(pid and os.path.exists(f"/proc/{pid}"))


def _autoheal_notice(emulator: Emulator, rulebook: _Rulebook, addresses: list[str], orch_ip: str, bac: str,
                     computes: int) -> str:
    """A job runs on a node when its notice comes: the replacement is proven before the reclaim."""
    say("A job runs on a compute node when EC2's two-minute notice comes for it")
    submitted = _ssh(orch_ip, f"{bac} docker run --id-only --wait=false {LOCAL_IMAGE} -- sh -c 'sleep 90'", addresses)
    job_id = submitted.stdout.strip()
    if submitted.returncode != 0 or not job_id.startswith("j-"):
        raise SystemExit(f"sandbox: the job was not submitted ({submitted.returncode}): {submitted.stderr}")
    running = _poll(lambda: _job(orch_ip, bac, job_id, addresses),
                    lambda j: any(_state(e) == "Running" for e in _executions(j)), 60)
    first = next((e for e in _executions(running) if _state(e) == "Running"), None)
    if first is None:
        raise SystemExit(f"sandbox: job {job_id} did not start: {json.dumps(running)[-2000:]}")
    nodes = _nodes(orch_ip, bac, addresses)
    victim = (nodes[first["NodeID"]]["Info"].get("Labels") or {}).get("instance-id")
    region = next(r for r in REGIONS if victim in _live_instances(emulator, r, "compute"))
    before = set(_live_instances(emulator, region, "compute"))
    print(f"job {job_id}: runs on {victim} ({region}, node {first['NodeID']})")
    t_notice, wall_notice = time.monotonic(), time.time()
    print(json.dumps(emulator.interrupt(region, [victim], notice_seconds=AUTOHEAL_NOTICE_SECONDS)))

    launched = _poll(lambda: set(_live_instances(emulator, region, "compute")) - before, bool, AUTOHEAL_NOTICE_SECONDS, 0.5)
    t_launched = time.monotonic()
    if not launched:
        raise SystemExit(f"sandbox: the rulebook launched no replacement for {victim}: {rulebook.text()[-4000:]}")
    [replacement] = sorted(launched)

    def joined() -> bool:
        return any((n["Info"].get("Labels") or {}).get("instance-id") == replacement
                   and n["ConnectionState"]["Status"] == "CONNECTED"
                   and n.get("Membership") == "APPROVED" for n in _nodes(orch_ip, bac, addresses).values())

    _poll(joined, bool, AUTOHEAL_NOTICE_SECONDS, 1)
    t_joined = time.monotonic()
    proven = f"Configured and proven with the smoke job: {replacement}"
    said = _poll(rulebook.text, lambda t: proven in t, AUTOHEAL_NOTICE_SECONDS, 0.5)
    t_proven = time.monotonic()
    if proven not in said:
        raise SystemExit(f"sandbox: the rulebook's heal did not prove {replacement}: {said[-4000:]}")
    # the heal for the notice names the victim among its instances to drain (with any other request it took along)
    delivered = re.search(rf"instances to drain: [^\n']*{re.escape(victim)}", said)
    if not delivered:
        raise SystemExit(f"sandbox: the notice for {victim} did not reach the heal: {said[-4000:]}")
    reclaim_at = t_notice + AUTOHEAL_NOTICE_SECONDS
    if t_proven >= reclaim_at:
        raise SystemExit(f"sandbox: {replacement} was proven {t_proven - t_notice:.0f} s after the notice, "
                         f"after the reclaim ({AUTOHEAL_NOTICE_SECONDS} s)")
    replaced = _poll(lambda: _job(orch_ip, bac, job_id, addresses),
                     lambda j: any(e["NodeID"] != first["NodeID"] and _state(e) in ("Running", "Completed")
                                   for e in _executions(j)), 120, 2)
    again = [e for e in _executions(replaced) if e["NodeID"] != first["NodeID"] and _state(e) in ("Running", "Completed")]
    if not again:
        raise SystemExit(f"sandbox: job {job_id} was not placed again: {json.dumps(replaced)[-2000:]}")
    _check_connected(orch_ip, bac, computes, addresses, {replacement})
    phases, heal_wall = _heal_phases(said[delivered.start():])  # the notice's heal, not the tick's before it
    if heal_wall is not None:
        phases = {"event_delivery": heal_wall - wall_notice, **phases}
    print(f"autoheal: notice -> replacement {replacement} launched {t_launched - t_notice:.1f} s, CONNECTED and "
          f"APPROVED {t_joined - t_notice:.1f} s, past its smoke job {t_proven - t_notice:.1f} s (reclaim at "
          f"{AUTOHEAL_NOTICE_SECONDS} s); job {job_id} placed again on {again[0]['NodeID']}")
    print("autoheal: the heal's phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    return victim


def _autoheal_spill(emulator: Emulator, rulebook: _Rulebook, addresses: list[str], orch_ip: str, bac: str,
                    computes: int, hosts: int) -> tuple[str, tuple[str, str, float]]:
    """HOME_REGION dry, a notice for its node: the rulebook's heal puts the replacement in the overflow
    region. Returns the overflow node, and (the interrupted node, its address, when it is reclaimed)."""
    _settle_hosts(emulator, addresses, hosts)  # the address of the node the last heal let go
    [victim] = _live_instances(emulator, HOME_REGION, "compute")
    victim_ip = _public_ip(emulator, HOME_REGION, victim)
    region = OVERFLOW["region"]
    say(f"{HOME_REGION} goes dry (no capacity for any type) and EC2's notice comes for its node {victim}: "
        f"the rulebook spills over to {region} on its own")
    print(json.dumps(emulator.capacity_error(HOME_REGION)))
    t_notice = time.monotonic()
    print(json.dumps(emulator.interrupt(HOME_REGION, [victim], notice_seconds=AUTOHEAL_NOTICE_SECONDS)))
    found = _poll(lambda: _live_instances(emulator, region, "compute"), bool, AUTOHEAL_NOTICE_SECONDS, 0.5)
    if len(found) != 1:
        raise SystemExit(f"sandbox: the rulebook did not launch one node in {region}: {found}\n{rulebook.text()[-4000:]}")
    [overflow] = found
    t_launched = time.monotonic()
    tags = _tags(emulator, region, overflow)
    if tags.get("bacalhau:overflow-for") != HOME_REGION or tags.get("bacalhau:role") != "compute":
        raise SystemExit(f"sandbox: the overflow node {overflow} is not tagged as overflow for {HOME_REGION}: {tags}")
    proven = f"Configured and proven with the smoke job: {overflow}"
    said = _poll(rulebook.text, lambda t: proven in t, 2 * AUTOHEAL_NOTICE_SECONDS, 0.5)
    t_proven = time.monotonic()
    if proven not in said:
        raise SystemExit(f"sandbox: the rulebook's heal did not prove {overflow}: {said[-4000:]}")
    if set(_live_instances(emulator, HOME_REGION, "compute")) - {victim}:  # (the victim: reclaimed at 120 s)
        raise SystemExit(f"sandbox: the rulebook launched in {HOME_REGION}, which has no capacity")
    _check_connected(orch_ip, bac, computes, addresses, {overflow})
    print(f"autoheal: notice -> {overflow} launched in {region} (tagged bacalhau:overflow-for={HOME_REGION}) "
          f"{t_launched - t_notice:.1f} s, past its smoke job {t_proven - t_notice:.1f} s (reclaim at "
          f"{AUTOHEAL_NOTICE_SECONDS} s)")
    return overflow, (victim, victim_ip, t_notice + AUTOHEAL_NOTICE_SECONDS)


def _autoheal_home(emulator: Emulator, rulebook: _Rulebook, addresses: list[str], orch_ip: str, bac: str,
                   computes: int, hosts: int, overflow: str, reclaim: tuple[str, str, float]) -> None:
    """HOME_REGION recovers; the rulebook's tick brings the node home, then lets the overflow node go."""
    victim, victim_ip, reclaim_at = reclaim
    _reclaimed(emulator, HOME_REGION, victim, victim_ip, max(0.0, reclaim_at - time.monotonic()) + 60)
    _hosts_back(hosts)
    # the reclaim's events run heals too: let them end while the region is still dry, so that what
    # brings the node home is a tick
    _poll(lambda: (AUTOHEAL_DIR / "heal.lock").exists() and _lock_free(AUTOHEAL_DIR / "heal.lock")
          and "'kind': 'state'" in rulebook.text(), bool, 120, 1)
    time.sleep(3)
    _poll(lambda: _lock_free(AUTOHEAL_DIR / "heal.lock"), bool, 180, 1)
    say(f"{HOME_REGION} recovers; nobody runs heal.yml: the rulebook's next tick brings the node home")
    print(json.dumps(emulator.clear_faults()))
    t_clear = time.monotonic()
    events = re.compile(r"'kind': '(?:state|interruption|rebalance)'")
    events_before = len(events.findall(rulebook.text()))
    found = _poll(lambda: _live_instances(emulator, HOME_REGION, "compute"), bool, 120, 0.5)
    if len(found) != 1:
        raise SystemExit(f"sandbox: the rulebook did not launch one node in {HOME_REGION}: {found}\n"
                         f"{rulebook.text()[-4000:]}")
    [back] = found
    t_launched = time.monotonic()
    said = rulebook.text()
    if len(events.findall(said)) != events_before or "'kind': 'tick'" not in said:
        raise SystemExit(f"sandbox: {back} was launched after an event, not by a tick: {said[-4000:]}")
    proven = f"Configured and proven with the smoke job: {back}"
    said = _poll(rulebook.text, lambda t: proven in t and not _live_instances(emulator, OVERFLOW["region"], "compute"),
                 240, 1)
    t_home = time.monotonic()
    if proven not in said:
        raise SystemExit(f"sandbox: the rulebook's heal did not prove {back}: {said[-4000:]}")
    if _live_instances(emulator, OVERFLOW["region"], "compute"):
        raise SystemExit(f"sandbox: the overflow node {overflow} was not let go once {HOME_REGION} had room")
    if not re.search(rf"Terminated \(drained, or overflow no longer needed\): [^\n']*{re.escape(overflow)}", said):
        raise SystemExit(f"sandbox: the rulebook's heal did not say it terminated {overflow}")
    _check_connected(orch_ip, bac, computes, addresses, {back})
    print(f"autoheal: {HOME_REGION} had room -> the tick's heal launched {back} there {t_launched - t_clear:.1f} s "
          f"later, proved it and let the overflow node {overflow} go {t_home - t_clear:.1f} s after")


def _poll(what, done, timeout: float, step: float = 0.5):
    """what() until done(value) or the timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(step)


def _json_ssh(address: str, command: str, ours: list[str]):
    out = _ssh(address, command, ours, echo=False)
    if out.returncode != 0:
        raise SystemExit(f"sandbox: {command.split()[1:4]} failed on {address}: {out.stderr[-1000:]}")
    return json.loads(out.stdout)


def _job(orch_ip: str, bac: str, job_id: str, ours: list[str]) -> dict:
    return _json_ssh(orch_ip, f"{bac} job describe {job_id} --output json", ours)


def _executions(job: dict) -> list[dict]:
    return (job.get("Executions") or {}).get("Items") or []


# models.ExecutionStateType (pkg/models/execution.go): the API sends the number
_EXECUTION_STATES = {6: "Running", 9: "Completed", 10: "Failed", 11: "Cancelled"}


def _state(execution: dict) -> str:
    value = execution["ComputeState"]["StateType"]
    return _EXECUTION_STATES.get(value, str(value))


def _nodes(orch_ip: str, bac: str, ours: list[str]) -> dict[str, dict]:
    return {n["Info"]["NodeID"]: n for n in _json_ssh(orch_ip, f"{bac} node list --output json", ours)}


def _node_of(orch_ip: str, bac: str, instance_id: str, ours: list[str]) -> str:
    found = [nid for nid, n in _nodes(orch_ip, bac, ours).items()
             if (n["Info"].get("Labels") or {}).get("instance-id") == instance_id]
    if len(found) != 1:
        raise SystemExit(f"sandbox: the orchestrator does not know one node of {instance_id}: {found}")
    return found[0]


def _check_connected(orch_ip: str, bac: str, computes: int, ours: list[str], new: set[str]) -> None:
    """The orchestrator lists as many connected compute nodes as the cluster file asks for, the new
    ones among them (a node heal.yml let go leaves once its host has shut down: a few seconds)."""
    def connected_now() -> set[str]:
        return {(n["Info"].get("Labels") or {}).get("instance-id") for n in _nodes(orch_ip, bac, ours).values()
                if n["Info"]["NodeType"] == "Compute" and n["ConnectionState"]["Status"] == "CONNECTED"}

    connected = _poll(connected_now, lambda c: len(c) == computes and new <= c, 30, 1)
    if len(connected) != computes or not new <= connected:
        raise SystemExit(f"sandbox: the orchestrator does not list {computes} connected compute nodes "
                         f"with {sorted(new)} among them: {sorted(i or '?' for i in connected)}")
    print(f"the orchestrator lists {computes} connected compute nodes: {', '.join(sorted(connected))}")


def _journal(address: str, unit: str, since: float, ours: list[str]) -> list[dict]:
    out = _ssh(address, f"sudo journalctl -u {unit} -o json --no-pager --since=@{int(since) - 2}", ours, echo=False)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def _reclaimed(emulator: Emulator, region: str, instance_id: str, address: str, timeout: float) -> None:
    """Wait until the emulator has reclaimed the instance and its test host is off."""
    instance = _poll(lambda: _ec2(emulator, region).describe_instances(
        InstanceIds=[instance_id])["Reservations"][0]["Instances"][0],
        lambda i: i["State"]["Name"] == "terminated", timeout, 1)
    if instance["State"]["Name"] != "terminated" or instance["StateReason"]["Code"] != "Server.SpotInstanceTermination":
        raise SystemExit(f"sandbox: {instance_id} was not reclaimed: {instance['State']} {instance.get('StateReason')}")
    print(f"{instance_id}: terminated ({instance['StateReason']['Code']})")
    # off: sshd gone, then its systemd-nspawn ended (until then testhosts.sh counts it as up)
    if _poll(lambda: _answers(address) or _host_running(address), lambda up: not up, 60):
        raise SystemExit(f"sandbox: the test host {address} of the reclaimed {instance_id} did not power off")
    print(f"test host {address} is off")


def _answers(address: str) -> bool:
    try:
        socket.create_connection((address, 22), timeout=1).close()
        return True
    except OSError:
        return False


def _hosts_back(hosts: int) -> None:
    """A powered-off test host comes back as a new machine, for the address the emulator hands out again."""
    run([str(REPO / "tests/hosts/testhosts.sh"), "up", str(hosts)], env=env_for_tools())


def _one_new(emulator: Emulator, region: str, old: set[str], output: str) -> str:
    new = [i for i in _live_instances(emulator, region, "compute") if i not in old]
    if len(new) != 1:
        raise SystemExit(f"sandbox: heal.yml did not leave one new compute node in {region}: {new}\n{output[-3000:]}")
    return new[0]


def _check_heal(output: str, configured: str, forgotten: str | None = None, terminated: str | None = None) -> None:
    """heal.yml's own account of what it did, and its smoke job on the node it configured."""
    if not re.search(rf"Configured and proven with the smoke job: {re.escape(configured)}$", output, re.M):
        raise SystemExit(f"sandbox: heal.yml did not configure {configured} and prove it with the smoke job")
    if "The smoke job ran on all 1 compute node(s)." not in output:
        raise SystemExit(f"sandbox: heal.yml's smoke job did not run on {configured}")
    if forgotten and not re.search(rf"Forgotten by the orchestrator \(instance gone\): .*{re.escape(forgotten)}", output):
        raise SystemExit(f"sandbox: heal.yml did not make the orchestrator forget {forgotten}")
    if terminated and not re.search(rf"Terminated \(drained, or overflow no longer needed\): .*{re.escape(terminated)}",
                                    output):
        raise SystemExit(f"sandbox: heal.yml did not say it terminated {terminated}")
    failed = [h for h, r in recap(output).items() if r["failed"]]
    if failed:
        raise SystemExit(f"sandbox: heal.yml failed on {failed}")


def _tags(emulator: Emulator, region: str, instance_id: str) -> dict[str, str]:
    instance = _ec2(emulator, region).describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def _ec2(emulator: Emulator, region: str):
    import boto3

    return boto3.client("ec2", region_name=region, endpoint_url=emulator.url,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _public_ip(emulator: Emulator, region: str, instance_id: str) -> str:
    instance = _ec2(emulator, region).describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return instance.get("PublicIpAddress") or ""


def _compute_count(hosts: int) -> int:
    return hosts - 1 - SPARE_HOSTS


def _ssh(address: str, command: str, ours: list[str], echo: bool = True) -> subprocess.CompletedProcess:
    """Run a command on one of this sandbox's own test hosts, as the cluster's SSH user."""
    if address not in ours:  # only ever one of our own test hosts
        raise SystemExit(f"sandbox: {address!r} is not one of this sandbox's test hosts")
    key = HOSTS_STATE / "id_ed25519"
    cmd = ["ssh", "-n", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
           f"ubuntu@{address}", command]
    # the API key never appears in output
    if echo:
        print("$ " + re.sub(r"(BACALHAU_API_KEY=)\S+", r"\1<the cluster's API key>", " ".join(cmd[-2:])),
              flush=True)
    return subprocess.run(cmd, text=True, capture_output=True, timeout=300)


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
