"""Conda environments: every rule names one that exists and pins exactly the project's versions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RULE_START = re.compile(r"^\s*(rule|checkpoint)\s+(\w+)\s*:", re.MULTILINE)


def rule_blocks() -> dict[str, tuple[Path, str]]:
    """rule name → (file, text of the rule block) for every rule of rules/*.smk and the Snakefile."""
    blocks = {}
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        text = path.read_text()
        starts = list(RULE_START.finditer(text))
        for index, match in enumerate(starts):
            end = starts[index + 1].start() if index + 1 < len(starts) else len(text)
            blocks[match.group(2)] = (path, text[match.start():end])
    return blocks


def project_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


JOB_RULES = {name: block for name, block in rule_blocks().items() if name != "all"}


def test_rules_were_found():
    assert {"demo_cohort", "clean_manifest", "fetch_slide", "slide_inventory"} <= set(JOB_RULES)


@pytest.mark.parametrize("rule", sorted(JOB_RULES))
def test_rule_has_log_threads_resources_and_an_existing_conda_env(rule):
    path, block = JOB_RULES[rule]
    for directive in ("log:", "threads:", "resources:", "conda:"):
        assert directive in block, f"rule {rule} in {path.name} lacks {directive}"
    env = re.search(r'conda:\s*\n\s*"([^"]+)"', block).group(1)
    assert (path.parent / env).resolve().is_file(), f"rule {rule}: conda env {env} does not exist"
    assert (path.parent / env).resolve().stem == rule, "one env per rule, named after it"


ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


@pytest.mark.parametrize("env", ENV_FILES, ids=[p.stem for p in ENV_FILES])
def test_env_pins_every_dependency_to_the_project_pins(env):
    spec = yaml.safe_load(env.read_text())
    assert spec["channels"] == ["conda-forge", "nodefaults"]
    pins = project_pins()
    conda, pip = [], []
    for dependency in spec["dependencies"]:
        if isinstance(dependency, dict):
            pip.extend(dependency["pip"])
        else:
            conda.append(dependency)
    assert all(re.fullmatch(r"[\w.-]+=[\w.]+", item) for item in conda), f"unpinned conda dependency in {env.name}: {conda}"
    assert pip, f"{env.name} installs no Python package"
    for item in pip:
        name, _, version = item.partition("==")
        assert version, f"{env.name}: {item} is not pinned with =="
        assert pins.get(name.lower()) == version, f"{env.name}: {item} differs from requirements.txt ({pins.get(name.lower())})"


def test_every_env_file_is_used_by_a_rule():
    used = {re.search(r'conda:\s*\n\s*"([^"]+)"', block).group(1).split("/")[-1] for _, block in JOB_RULES.values()}
    assert {env.name for env in ENV_FILES} == used
