"""The README's tour, as a newcomer pastes it: every line of its bash block, in order, in one bash, in a
folder that holds what the repository gives; each exits 0 and writes what its comments say, where they
say it (``dagster dev`` blocks: it is only checked to be there; the UI tests start the webserver)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from dagster import DagsterInstance

REPO = Path(__file__).resolve().parents[1]
HEADING = "## A ten-minute tour"
# what the tour uses from the repository, linked into the folder it runs in
GIVEN = (".venv", "scripts", "prod_system", "pyproject.toml", "dagster.yaml", "workspace.yaml", "docs")
# an output the comments promise: a path under OUT/, or the snapshot (paths with {placeholders} are not)
PROMISED = re.compile(r"(?<![\w./{}])(OUT/[^\s,;:(){}]*|snapshot\.parquet)(?![\w{}])")


def tour_steps(readme: str) -> list[tuple[str, list[str], str]]:
    """The tour's commands as pasted (continuation lines included), each with the outputs its comments
    promise and its comments."""
    block = readme.split(HEADING, 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    steps, comments, command = [], [], []
    for line in block.splitlines():
        if not command and not line.strip():
            continue
        if not command and line.lstrip().startswith("#"):
            comments.append(line)
            continue
        command.append(line)
        if not line.endswith("\\"):
            said = " ".join([*comments, line.partition(" # ")[2]])
            steps.append(("\n".join(command), sorted(set(PROMISED.findall(said))), said))
            comments, command = [], []
    return steps


def test_the_tour_steps_are_read_from_the_readme():
    steps = tour_steps((REPO / "README.md").read_text())
    commands = [command.split()[0] for command, _, _ in steps]
    assert commands[:1] == ["source"] and commands.count("prod-system") == 9, commands
    (dev,) = [(command, said) for command, _, said in steps if command.startswith("dagster dev")]
    assert dev[0] == "dagster dev -w workspace.yaml" and "second terminal" in dev[1]
    assert all(promised for command, promised, _ in steps if command.startswith("prod-system simulate"))


@pytest.mark.wall_clock
def test_the_readme_tour_runs_as_pasted(tmp_path):
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("the tour sources scripts/env.sh, which uses the repository's .venv (scripts/test.sh makes it)")
    run_the_tour((REPO / "README.md").read_text(), tmp_path)


def run_the_tour(readme: str, tmp_path: Path) -> None:
    steps = tour_steps(readme)
    tour = tmp_path / "tour"
    tour.mkdir()
    for name in GIVEN:
        (tour / name).symlink_to(REPO / name)
    logs = tmp_path / "logs"
    logs.mkdir()
    script = []
    for i, (command, _, _) in enumerate(steps):
        if not command.startswith("dagster dev"):  # it serves until Ctrl-C
            script.append(f"{{\n{command}\n}} >{logs}/{i}.out 2>{logs}/{i}.err\necho $? >{logs}/{i}.rc")
    (tmp_path / "tour.sh").write_text("\n".join(script) + "\n")
    # a newcomer's shell: no DAGSTER_HOME (the tour's env.sh sets it) and none of the system's variables
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "PROD_SYSTEM_", "VIRTUAL_ENV"))}
    subprocess.run(["bash", str(tmp_path / "tour.sh")], cwd=tour, env=env, timeout=900, check=False)
    for i, (command, promised, _) in enumerate(steps):
        if command.startswith("dagster dev"):
            continue
        rc = logs / f"{i}.rc"
        err = (logs / f"{i}.err").read_text() if (logs / f"{i}.err").exists() else ""
        assert rc.exists(), f"the shell stopped at {command!r} (set -e left on?): {err[-2000:]}"
        assert rc.read_text().strip() == "0", f"{command!r} failed: {err[-3000:]}"
        for path in promised:
            assert (tour / path).exists(), f"{command!r} promises {path}"
    (reading,) = [i for i, (command, _, _) in enumerate(steps) if "portfolio/statistics" in command]
    printed = (logs / f"{reading}.out").read_text()
    assert "bar_end" in printed and re.search(r"\[5 rows x \d+ columns\]", printed)  # step 7: the last bars' statistics
    # the runs of steps 2 and 4, in the instance of the tour's folder, which the UI of step 3 reads
    with DagsterInstance.from_ref(_ref(tour)) as instance:
        runs = instance.get_runs()
    assert sorted(run.job_name for run in runs) == ["C1b_simulation_job"] * 2
    assert {run.tags.get("prod_system/root") for run in runs} == {None, str((tour / "OUT").resolve())}


def _ref(home: Path):
    from dagster._core.instance.ref import InstanceRef

    return InstanceRef.from_dir(str(home))
