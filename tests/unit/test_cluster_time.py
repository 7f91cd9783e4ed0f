"""The cluster-time benchmark's arithmetic (tests/bench/cluster): events to phases, CPU, the report.

No hosts, no Ansible: synthetic timer events in the shape tests/bench/callback_plugins/play_timer.py
writes. The benchmark itself is ``make bench-cluster`` (docs/benchmarks.md), not part of ``make test``.
"""
from __future__ import annotations

import pytest

from tests.bench.cluster import phases, report

ROLE = "/work/main/.collections/ansible_collections/bacalhau/aws_spot/roles"


def _events(smoke: bool = True, extra_play: str | None = None) -> list[dict]:
    """create.yml's plays at known times (t = seconds), one or two tasks each."""
    ev = [{"event": "playbook_start", "t": 1.0}]
    t = [2.0]

    def play(name: str, length: float, tasks: list[tuple[str, str, str, float, list[str]]]) -> None:
        ev.append({"event": "play_start", "t": t[0], "name": name})
        at = t[0]
        for i, (task, action, path, secs, hosts) in enumerate(tasks):
            uuid = f"{name}-{i}"
            ev.append({"event": "task_start", "t": at, "uuid": uuid, "name": task, "action": action, "path": path,
                       "loop": False, "run_once": False, "delegate_to": None})
            for h in hosts:
                ev.append({"event": "host_start", "t": at, "uuid": uuid, "host": h})
                ev.append({"event": "result", "t": at + secs, "uuid": uuid, "host": h, "status": "ok", "item": False})
            at += secs
        t[0] += length

    play("Create the cluster's AWS resources", 10.0, [
        ("Ask AWS who we are", "amazon.aws.aws_caller_info", "/r/playbooks/tasks/credentials.yml:5", 1.0, ["localhost"]),
        ("Launch the compute nodes", "bacalhau.aws_spot.spot_cluster", "/r/playbooks/tasks/aws.yml:165", 6.0,
         ["localhost"]),
        ("Show the cluster per region", "ansible.builtin.debug", "/r/playbooks/tasks/aws.yml:180", 3.0, ["localhost"]),
    ])
    play("Find the cluster's nodes by their tags", 2.0, [])
    play("Wait until every node answers over SSH", 3.0, [
        ("Wait for SSH and Python", "ansible.builtin.wait_for_connection", "/r/playbooks/configure.yml:90", 3.0,
         ["a", "b", "c"])])
    play("Install and start the orchestrator", 5.0, [
        ("Download the release archives", "ansible.builtin.get_url", f"{ROLE}/bacalhau_node/tasks/download.yml:22",
         2.0, ["a"]),
        ("Install the verified bacalhau binary", "ansible.builtin.copy", f"{ROLE}/bacalhau_node/tasks/install.yml:41",
         3.0, ["a"])])
    play("Install and start the compute nodes", 20.0, [
        ("Install Docker from the distribution's packages", "ansible.builtin.apt",
         f"{ROLE}/bacalhau_compute/tasks/docker.yml:2", 20.0, ["b", "c"])])
    play("Check that every compute node is connected to the orchestrator, and approved", 4.0, [])
    if smoke:
        play("Prove the cluster runs jobs (a smoke job on every compute node)", 6.0, [])
    if extra_play:
        play(extra_play, 1.0, [])
    play("Show the cluster", 2.0, [])
    ev.append({"event": "stats", "t": t[0]})
    return ev


def _proc(ev: list[dict]) -> tuple[float, float]:
    return 1.0, ev[-1]["t"] + 0.5  # process start, process exit


def test_known_plays_go_to_their_phase_and_unknown_ones_to_other():
    assert phases.phase_of_play("Create the cluster's AWS resources") == "aws"
    assert phases.phase_of_play("Install and start the compute nodes") == "configuration"
    assert phases.phase_of_play("Prove the cluster runs jobs (a smoke job on every compute node)") == "checks"
    assert phases.phase_of_play("Check that every compute node is connected to the orchestrator, and approved") == "checks"
    assert phases.phase_of_play("Install the GPU drivers") == "other"


def test_phases_add_up_to_the_process_time():
    ev = _events()
    start, end = _proc(ev)
    secs = phases.phase_seconds(ev, start, end)
    assert secs["startup"] == pytest.approx(1.0)  # process start to the first play
    assert secs["aws"] == pytest.approx(10.0)
    assert secs["inventory"] == pytest.approx(2.0)
    assert secs["ssh"] == pytest.approx(3.0)
    assert secs["configuration"] == pytest.approx(25.0)  # both plays
    assert secs["checks"] == pytest.approx(12.0)  # CONNECTED + smoke + the table
    assert secs["exit"] == pytest.approx(0.5)
    assert secs["other"] == 0.0
    assert sum(secs.values()) == pytest.approx(end - start)


def test_a_renamed_play_is_counted_as_other_and_named():
    ev = _events(extra_play="Install the GPU drivers")
    start, end = _proc(ev)
    run = phases.summarize_run(ev, start, end)
    assert run["phases"]["other"]["seconds"] == pytest.approx(1.0)
    assert run["unknown_plays"] == ["Install the GPU drivers"]
    assert "Install the GPU drivers" in report.markdown(_data({3: run}))


def test_the_smoke_jobs_end_is_found_and_its_absence_said():
    ev = _events()
    start, end = _proc(ev)
    run = phases.summarize_run(ev, start, end)
    assert run["smoke_play"] is True
    assert run["to_smoke_end"] == pytest.approx(1.0 + 10 + 2 + 3 + 25 + 4 + 6)
    without = phases.summarize_run(_events(smoke=False), *_proc(_events(smoke=False)))
    assert without["smoke_play"] is False and without["to_smoke_end"] is None
    assert "NO smoke job" in report.markdown(_data({3: without}))
    assert "NO smoke job" not in report.markdown(_data({3: run}))


def test_tasks_last_until_the_next_one_and_fall_into_their_parts():
    ev = _events()
    by_name = {t["name"]: t for t in phases.tasks(ev, _proc(ev)[1])}
    assert by_name["Launch the compute nodes"]["seconds"] == pytest.approx(6.0)
    assert by_name["Launch the compute nodes"]["part"] == "spot_cluster calls"
    assert by_name["Ask AWS who we are"]["part"] == "credential check (tasks/credentials.yml)"
    download = by_name["Download the release archives"]
    assert download["file"] == "roles/bacalhau_node/tasks/download.yml"
    assert download["part"].startswith("controller: download + verify")
    assert by_name["Wait for SSH and Python"]["hosts"] == ["a", "b", "c"]
    parts = phases.part_seconds(list(by_name.values()))
    assert parts["configuration"]["Docker (bacalhau_compute/tasks/docker.yml)"] == pytest.approx(20.0)
    assert parts["aws"]["other tasks (checks, facts, security group rules)"] == pytest.approx(3.0)


def test_a_second_playbook_appended_to_the_events_is_not_counted():
    ev = _events()
    start, end = _proc(ev)
    later = ev[-1]["t"] + 5
    appended = ev + [{"event": "playbook_start", "t": later},
                     {"event": "play_start", "t": later + 1, "name": "Destroy the cluster's AWS resources"},
                     {"event": "stats", "t": later + 9}]
    assert phases.phase_seconds(appended, start, end) == phases.phase_seconds(ev, start, end)
    assert [p["name"] for p in phases.plays(appended)] == [p["name"] for p in phases.plays(ev)]


def test_retries_and_loop_items_are_counted_per_task():
    ev = [{"event": "play_start", "t": 0.0, "name": "Check that every compute node is connected"},
          {"event": "task_start", "t": 0.0, "uuid": "u", "name": "Wait until CONNECTED", "action": "uri", "path": "x"},
          {"event": "result", "t": 2.0, "uuid": "u", "host": "o", "status": "retry", "item": False},
          {"event": "result", "t": 4.0, "uuid": "u", "host": "o", "status": "retry", "item": False},
          {"event": "result", "t": 5.0, "uuid": "u", "host": "o", "status": "ok", "item": True},
          {"event": "result", "t": 5.0, "uuid": "u", "host": "o", "status": "ok", "item": False},
          {"event": "stats", "t": 5.5}]
    (task,) = phases.tasks(ev)
    assert (task["retries"], task["items"], task["results"]) == (2, 1, 1)
    assert task["seconds"] == pytest.approx(5.5)


def test_cpu_is_interpolated_between_samples_and_split_by_owner():
    # 2 CPUs; the machine half busy; the controller 0.5 CPU, the hosts 0.3, nothing for the rest
    samples = [{"t": float(t), "busy": 1.0 * t, "total": 2.0 * t, "controller": 0.5 * t, "hosts": 0.3 * t,
                "emulator": 0.1 * t, "standin": 0.0} for t in range(0, 11, 2)]
    cpu = phases.cpu_in(samples, [(1.0, 5.0), (7.0, 9.0)], ncpu=2)
    assert cpu["machine_busy"] == pytest.approx(0.5)
    assert cpu["machine_cpu_s"] == pytest.approx(6.0)  # 6 s of wall, 1 CPU busy
    assert cpu["controller_cpu_s"] == pytest.approx(3.0)
    assert cpu["hosts_cpu_s"] == pytest.approx(1.8)
    assert cpu["emulator_cpu_s"] == pytest.approx(0.6)
    assert cpu["rest_cpu_s"] == pytest.approx(0.6)  # other users of the machine
    assert phases.cpu_in(samples, [(20.0, 30.0)], ncpu=2) is None  # outside the samples: unknown, not zero


def test_proc_parsing_and_process_trees():
    busy, total = phases.proc_stat_times("cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 1 2 3 4\n")
    assert (busy, total) == (160.0, 980.0)  # iowait is idle
    stat = "4242 (ssh: /root/.ansible/cp/ab) S 17 4242 4242 0 -1 0 0 0 0 0 7 3 20 10 20 0 1 0 1 0 0"
    assert phases.parse_pid_stat(stat) == (4242, 17, 40.0)
    stats = {1: (0, 100.0), 17: (1, 5.0), 4242: (17, 40.0), 50: (1, 9.0), 51: (50, 1.0)}
    assert phases.tree_cpu(stats, [17]) == 45.0
    assert phases.tree_cpu(stats, [50, 51]) == 10.0  # a pid under two roots counts once
    assert phases.tree_cpu(stats, [999]) == 0.0  # gone: nothing


def test_api_calls_are_put_in_their_phase_with_their_depth():
    log = [{"operation": "RunInstances", "region": "us-east-1", "start": 0.5, "end": 0.6},
           {"operation": "RunInstances", "region": "eu-west-1", "start": 0.5, "end": 0.6},
           {"operation": "DescribeInstances", "region": "us-east-1", "start": 0.7, "end": 0.8},
           {"operation": "DescribeInstances", "region": "us-east-1", "start": 5.0, "end": 5.1}]
    api = phases.calls_in(log, offset=100.0, windows=[(100.0, 101.0)])
    assert api["calls"] == 3
    assert api["depth"] == 2  # the two launches together, then one describe
    assert api["by_operation"] == {"RunInstances": 2, "DescribeInstances": 1}


def _data(runs: dict[int, dict]) -> dict:
    return {"meta": {"commit": "abc", "date": "d", "machine": "2 CPUs", "ansible": "ansible [core]",
                     "latency_ms": 0.0, "loadavg": "0 0 0"},
            "runs": {str(n): dict(r, boot_seconds=1.0, destroy_seconds=2.0, rc=0) for n, r in runs.items()}}


def test_the_growth_table_gives_the_ratio_from_the_smallest_n_to_the_largest():
    small = phases.summarize_run(_events(), *_proc(_events()))
    big = phases.summarize_run(_events(), *_proc(_events()))
    big["phases"] = {k: dict(v, seconds=v["seconds"] * (3.0 if k == "configuration" else 1.0))
                     for k, v in big["phases"].items()}
    rows = {line.split(" | ")[0]: line for line in report.growth_table({3: small, 9: big})}
    assert "| 25.0 | 75.0 | 3.00 |" in rows["| configuration"]
    assert "| 10.0 | 10.0 | 1.00 |" in rows["| aws"]
    text = report.markdown(_data({3: small, 9: big}))
    assert "## Growth 3 -> 9 hosts" in text


def test_of_several_runs_the_median_is_shown_with_every_total():
    runs = [{"total": t, "rc": 0, "phases": {"aws": {"seconds": t / 10}}} for t in (70.0, 50.0, 60.0)]
    chosen = report.pick(runs)
    assert chosen["total"] == 60.0
    assert [r["total"] for r in chosen["repeats"]] == [70.0, 50.0, 60.0]
    failed = report.pick([{"total": 50.0, "rc": 0, "phases": {}}, {"total": 90.0, "rc": 2, "phases": {}}])
    assert failed["rc"] == 2  # a failure is never hidden behind a good median


def test_a_task_whose_name_carries_a_count_is_the_same_task_at_every_n():
    def run(n: int, secs: float) -> dict:
        return {"tasks": [{"play": "Prove", "file": "playbooks/tasks/smoke_job.yml", "phase": "checks",
                           "name": f"Run the smoke job on the compute nodes ({n})", "seconds": secs, "hosts": ["o"],
                           "retries": 0, "items": 0, "loop": False, "run_once": False, "delegate_to": None}]}

    (row,) = report.task_growth({3: run(2, 1.0), 9: run(8, 4.0)})
    assert (row["lo"], row["hi"], row["grew"]) == (1.0, 4.0, 3.0)


def test_proc_net_tcp_addresses_read_as_the_kernel_prints_them():
    # /proc/net/tcp prints 10.213.10.11 as 0B0AD50A (little-endian); a ControlPersist master is known by it
    assert phases.ipv4_from_hex("0B0AD50A") == "10.213.10.11"
    assert phases.ipv4_from_hex("0100007F") == "127.0.0.1"
