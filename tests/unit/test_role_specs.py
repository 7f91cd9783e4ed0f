"""Each role's meta/argument_specs.yml agrees with its defaults/main.yml.

A variable added to one and not the other, a spec default that differs from the role's
default, or an option ``required`` while the role gives it a default (so the requirement can
never fail) is caught here. Options named ``_<role>_*`` are a role's internal inputs, passed
by the roles that include it, and have no defaults.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir() if (p / "meta").is_dir())


def _load(path: Path) -> dict:
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_agree_with_defaults(role: Path):
    defaults = _load(role / "defaults" / "main.yml")
    specs = _load(role / "meta" / "argument_specs.yml")["argument_specs"]
    public = specs.get("main", {}).get("options", {})
    problems = []
    for name, option in public.items():
        if option.get("required") and name in defaults:
            problems.append(f"{name}: required, but defaults/main.yml gives it {defaults[name]!r}")
        if "default" in option and name in defaults and option["default"] != defaults[name]:
            problems.append(f"{name}: spec default {option['default']!r} != defaults/main.yml {defaults[name]!r}")
        if "default" in option and name not in defaults:
            problems.append(f"{name}: a spec default but none in defaults/main.yml")
        if name not in defaults and not option.get("required") and not name.startswith(f"_{role.name}_"):
            problems.append(f"{name}: neither required nor in defaults/main.yml")
    problems += [f"{name}: in defaults/main.yml, not in the argument specs" for name in defaults if name not in public]
    assert not problems, "\n".join(problems)


def test_every_entry_point_of_the_internal_role_is_a_tasks_file():
    common = next(role for role in ROLES if role.name == "bacalhau_common")
    specs = _load(common / "meta" / "argument_specs.yml")["argument_specs"]
    assert sorted(specs) == sorted(p.stem for p in (common / "tasks").glob("*.yml"))
