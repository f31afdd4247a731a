"""Disk full on the log dir: a simulation whose log root is a tiny tmpfs (in a mount namespace of its
own: `unshare`, as root or in a user namespace) fails with one clear error, and leaves nothing
corrupted: every file under a final name is whole, no temporary file is left behind."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pandas as pd
import yaml


def test_disk_full_fails_clearly_and_corrupts_nothing(snapshot, tmp_path, reliability):
    tiny, after = tmp_path / "tiny", tmp_path / "after"
    tiny.mkdir()
    after.mkdir()
    simulate = [sys.executable, "-m", "prod_system.cli", "simulate", "--model", "C1b", "--engine", "core"]
    simulate += ["--market-data", str(snapshot), "--root", str(tiny)]
    simulate += ["--start", "2023-07-21T00:00:00Z", "--end", "2023-07-22T00:00:00Z"]
    script = (
        f"mount -t tmpfs -o size=160k tmpfs {shlex.quote(str(tiny))} || exit 97; "
        f"{shlex.join(simulate)}; status=$?; "
        f"cp -a {shlex.quote(str(tiny))}/. {shlex.quote(str(after))}/; exit $status"
    )
    namespace = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-Urm"]
    done = subprocess.run([*namespace, "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode != 97, f"could not mount a tmpfs in a mount namespace: {done.stderr}"
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    files = [path for path in after.rglob("*") if path.is_file()]
    assert files  # it got somewhere before the disk was full
    assert not [path for path in files if path.name.endswith(".tmp")]
    for path in files:
        if path.suffix == ".parquet":
            pd.read_parquet(path)
        elif path.suffix in (".yaml", ".json"):
            yaml.safe_load(path.read_text())
    reliability(
        "process",
        "disk full on the log dir",
        injected=1,
        corrupted=0,
        outcome=f"one error line ({errors[0][:60]}...); {len(files)} files left, all whole",
    )
