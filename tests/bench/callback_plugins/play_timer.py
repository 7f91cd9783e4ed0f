# The cluster-time benchmark's timer (tests/bench/cluster, docs/benchmarks.md). Not part of
# the collection: the benchmark loads it for its own runs only, with
#   ANSIBLE_CALLBACK_PLUGINS=tests/bench/callback_plugins ANSIBLE_CALLBACKS_ENABLED=play_timer
#   BACALHAU_PLAY_TIMER_FILE=/path/to/events.jsonl
# Without BACALHAU_PLAY_TIMER_FILE it does nothing.
from __future__ import annotations

DOCUMENTATION = """
name: play_timer
type: aggregate
short_description: write play, task and per-host result timestamps as JSON lines (benchmark only)
description:
  - One JSON object per line in the file named by BACALHAU_PLAY_TIMER_FILE, each with C(t), the
    system-wide monotonic clock (so the harness and the AWS emulator can be put on the same axis),
    and C(wall), the Unix time.
requirements:
  - enabled with ANSIBLE_CALLBACKS_ENABLED=play_timer
"""

import json
import os
import threading
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "play_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("BACALHAU_PLAY_TIMER_FILE")
        self._lock = threading.Lock()
        self._out = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 - kept open for the run

    # -- writing
    def _emit(self, event, **fields):
        if self._out is None:
            return
        record = {"event": event, "t": round(time.monotonic(), 6), "wall": round(time.time(), 6)}
        record.update(fields)
        with self._lock:
            self._out.write(json.dumps(record, default=str) + "\n")
            self._out.flush()

    @staticmethod
    def _task_fields(task):
        role = getattr(task, "_role", None)
        return {
            "uuid": task._uuid,
            "name": task.get_name(),
            "action": task.action,
            "path": task.get_path() or "",
            "role": role.get_name() if role is not None else "",
            "loop": bool(task.loop),
            "run_once": bool(task.run_once),
            "delegate_to": task.delegate_to if isinstance(task.delegate_to, str) else None,
        }

    def _result(self, status, result, item=False):
        task = result._task
        fields = {"uuid": task._uuid, "host": result._host.get_name(), "status": status, "item": item}
        delegated = (result._result or {}).get("_ansible_delegated_vars") or {}
        if delegated.get("ansible_delegated_host"):
            fields["delegated"] = delegated["ansible_delegated_host"]
        if status == "retry":
            fields["attempts"] = result._result.get("attempts")
        self._emit("result", **fields)

    # -- playbook, plays, tasks
    def v2_playbook_on_start(self, playbook):
        self._emit("playbook_start", file=getattr(playbook, "_file_name", ""), pid=os.getpid())

    def v2_playbook_on_play_start(self, play):
        self._emit("play_start", name=play.get_name().strip(), uuid=play._uuid)

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._emit("task_start", **self._task_fields(task))

    def v2_playbook_on_handler_task_start(self, task):
        self._emit("task_start", handler=True, **self._task_fields(task))

    def v2_playbook_on_stats(self, stats):
        self._emit("stats", hosts={h: stats.summarize(h) for h in sorted(stats.processed)})
        if self._out is not None:
            self._out.close()
            self._out = None

    # -- per host
    def v2_runner_on_start(self, host, task):
        self._emit("host_start", uuid=task._uuid, host=host.get_name())

    def v2_runner_on_ok(self, result):
        self._result("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result("failed", result)

    def v2_runner_on_skipped(self, result):
        self._result("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._result("unreachable", result)

    def v2_runner_item_on_ok(self, result):
        self._result("ok", result, item=True)

    def v2_runner_item_on_failed(self, result):
        self._result("failed", result, item=True)

    def v2_runner_item_on_skipped(self, result):
        self._result("skipped", result, item=True)

    def v2_runner_retry(self, result):
        self._result("retry", result)
