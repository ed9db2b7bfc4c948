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
    # One env per rule, named after it (the layout's rule: each rule its own env, so that two rules'
    # envs that happen to be identical today can diverge with their code).
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


def _module_file(name: str) -> Path | None:
    """The source file of module ``mmsurv.x.y`` in src/ (package → its __init__.py), else None."""
    base = REPO / "src" / Path(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(path: Path) -> set[str]:
    """Every module an ``import`` statement of the file names, at any depth (lazy imports count)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _lazy_exports(init: Path) -> dict[str, str] | None:
    """A package face's ``_EXPORTS`` (name → module it is imported from on first use), else None."""
    import ast

    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def third_party_imports(script: Path) -> set[str]:
    """Top-level third-party modules a rule's script can import, following mmsurv's own modules
    (parent packages included; the model registry imports every model module)."""
    import sys

    todo, seen, external = [script], set(), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "mmsurv":
                parts = name.split(".")
                for depth in range(1, len(parts) + 1):
                    found = _module_file(".".join(parts[:depth]))
                    if found is None:
                        continue
                    todo.append(found)
                    if found.name == "__init__.py" and "importlib" in found.read_text():
                        exports = _lazy_exports(found)
                        if exports is None:  # imports its modules by name: may run any of them
                            todo.extend(found.parent.glob("*.py"))
                        elif depth < len(parts) and parts[depth] in exports:  # ``from package import NAME``
                            todo.append(_module_file(exports[parts[depth]]))
                if name.startswith("mmsurv.models"):
                    todo.extend((REPO / "src/mmsurv/models").glob("*.py"))
            elif top not in sys.stdlib_module_names and top != "snakemake":
                external.add(top)
    return external


SCRIPT_RULES = {name: entry for name, entry in JOB_RULES.items() if "script:" in entry[1]}


@pytest.mark.parametrize("rule", sorted(SCRIPT_RULES))
def test_env_covers_the_imports_of_the_code_its_rule_runs(rule):
    """Each env installs every third-party package its rule's code imports (e.g. tifffile and
    imagecodecs for extract_features, without which reader auto silently falls back to OpenSlide)."""
    from importlib.metadata import packages_distributions

    path, block = SCRIPT_RULES[rule]
    script = (path.parent / re.search(r'script:\s*\n\s*"([^"]+)"', block).group(1)).resolve()
    env = (path.parent / re.search(r'conda:\s*\n\s*"([^"]+)"', block).group(1)).resolve()
    spec = yaml.safe_load(env.read_text())
    installed = {item.partition("==")[0].lower().replace("_", "-")
                 for dependency in spec["dependencies"] if isinstance(dependency, dict) for item in dependency["pip"]}
    distributions = packages_distributions()
    missing = []
    for module in sorted(third_party_imports(script)):
        candidates = {name.lower().replace("_", "-") for name in distributions.get(module, [module])}
        if not candidates & installed:
            missing.append(f"{module} ({' or '.join(sorted(candidates))})")
    assert not missing, f"envs/{env.name} (rule {rule}) lacks: {', '.join(missing)}"


def test_pyproject_lists_every_runtime_dependency_of_the_package():
    """``pip install mmsurv`` alone brings every third-party package the code imports."""
    import sys
    import tomllib
    from importlib.metadata import packages_distributions

    declared = set()
    for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        declared.add(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-"))
    distributions = packages_distributions()
    missing = set()
    for path in (REPO / "src/mmsurv").rglob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "mmsurv":
                continue
            candidates = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
            if not candidates & declared:
                missing.add(f"{top} in {path.relative_to(REPO)}")
    assert not missing, f"pyproject.toml dependencies lack: {', '.join(sorted(missing))}"
