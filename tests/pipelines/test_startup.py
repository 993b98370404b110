"""The app's start-up (pipelines/startup.py): run as a program it imports only what its MAP image
installs, and nothing costly it never uses; it scores as the app imported the usual way does."""

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement  # a dependency of pytest
from PIL import Image

pytest.importorskip(
    "monai.deploy.operators",
    reason="MONAI Deploy App SDK not installed (pip install -e '.[deploy]')",
)

from pipelines.exported_model import load_exported_model  # noqa: E402
from pipelines.squid_app import ChestXRayApp  # noqa: E402
from pipelines.startup import NOT_IN_THE_MAP  # noqa: E402
from tests.pipelines.factories import chest_pixels, write_dicom  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
#: installed by the MAP, but costly to import and not used by the app (torch imports it on demand)
UNUSED = ("sympy",)
#: imported by nothing but the every-module pass of ``monai/__init__``, which the app skips
EVERY_MODULE_PASS_ONLY = "monai.transforms.utils_create_transform_ims"
#: the modules imported by an entry point run as the program, to the end of argument parsing (``-h``)
_IMPORTS_OF_A_RUN = (
    "import json, runpy, sys\n"
    "entry = sys.argv[1]\n"
    "sys.argv = [entry, '-h']\n"
    "try:\n"
    "    runpy.run_module(entry, run_name='__main__', alter_sys=True)\n"
    "except SystemExit as stop:\n"
    "    assert not stop.code, stop.code\n"
    "print(json.dumps(sorted(sys.modules)))\n"
)


def _env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _map_distributions() -> set[str]:
    """pipelines/requirements.txt and everything they require, as installed here (extras included)."""
    lines = (
        line.split("#")[0].strip()
        for line in (REPO / "pipelines" / "requirements.txt").read_text().splitlines()
    )
    todo = [Requirement(line) for line in lines if line]
    extras: dict[str, set[str]] = {}
    while todo:
        requirement = todo.pop()
        key = _key(requirement.name)
        if key in extras and set(requirement.extras) <= extras[key]:
            continue
        extras.setdefault(key, set()).update(requirement.extras)
        try:
            requires = metadata.distribution(requirement.name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            needed = Requirement(line)
            if needed.marker is None or any(
                needed.marker.evaluate({"extra": e}) for e in {"", *extras[key]}
            ):
                todo.append(needed)
    return set(extras)


def test_what_the_app_hides_is_what_the_map_lacks():
    """Hiding a package the MAP installs would make a development run differ from the MAP."""
    in_the_map = _map_distributions()
    owners = metadata.packages_distributions()
    for name in NOT_IN_THE_MAP:
        assert not {_key(d) for d in owners.get(name, [])} & in_the_map, (
            f"{name}: the MAP installs it"
        )


@pytest.mark.parametrize("entry", ["pipelines", "pipelines.squid_app"])
def test_run_as_a_program_the_app_imports_only_what_the_map_installs(entry):
    """Fails when a module of the deploy path imports, at module level, a package the MAP lacks
    (it fails to start) or one the MAP does not list, or pulls in one that is costly and unused."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS_OF_A_RUN, entry],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    modules = json.loads(done.stdout.splitlines()[-1])
    imported = {name.partition(".")[0] for name in modules}
    costly = imported & {*NOT_IN_THE_MAP, *UNUSED}
    assert not costly, f"imported by the app's start: {sorted(costly)}"
    allowed = _map_distributions() | {"squid-monai"}
    owners = metadata.packages_distributions()
    outside = {
        name: owners[name]
        for name in imported
        if name in owners and not {_key(d) for d in owners[name]} & allowed
    }
    assert not outside, (
        f"imported, but not installed by the MAP (pipelines/requirements.txt): {outside}"
    )
    assert EVERY_MODULE_PASS_ONLY not in modules


@pytest.mark.slow
def test_the_program_scores_as_the_imported_app(tmp_path, standin_model):
    """Same inputs, same model: the command line (started as in the MAP) and the app imported
    in this process (MONAI as usual) give the same scores and model inputs."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_dicom(folder / "cr.dcm", chest_pixels(), study_uid="1.2.826.4.1")
    Image.fromarray(chest_pixels(bits=8).astype(np.uint8)).save(folder / "extra.png")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.squid_app",
            "-i",
            str(folder),
            "-o",
            str(tmp_path / "cli"),
            "-m",
            str(standin_model),
        ],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    app = ChestXRayApp(folder, tmp_path / "here", load_exported_model(standin_model, device="cpu"))
    app.run()
    here = {case["case_id"]: case for case in app.summary["cases"]}
    cli = {
        case["case_id"]: case
        for case in json.loads((tmp_path / "cli" / "run_summary.json").read_text())["cases"]
    }
    assert sorted(cli) == sorted(here) == ["1.2.826.4.1", "extra"]
    for case_id, case in cli.items():
        assert case["status"] == "scored" and case["score"] == here[case_id]["score"], case_id
        for name in ("input", "reconstruction"):
            assert (tmp_path / "cli" / case["outputs"][name]).read_bytes() == (
                tmp_path / "here" / here[case_id]["outputs"][name]
            ).read_bytes()


_BROKEN_SHORTCUT = """
import importlib.util, json, sys, warnings
import pipelines.startup as startup
real = importlib.util.find_spec
def changed(name, *args, **kwargs):  # stands for a MONAI release whose start-up the short-cut no longer fits
    if name == "monai":
        raise AttributeError("monai.utils.module has no load_submodules")
    return real(name, *args, **kwargs)
startup.importlib.util.find_spec = changed
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    startup.start_like_the_map()
import monai.networks.nets
print(json.dumps([str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]))
"""


def test_a_monai_whose_start_up_changed_is_imported_in_full_with_a_warning():
    done = subprocess.run(
        [sys.executable, "-c", _BROKEN_SHORTCUT],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    messages = json.loads(done.stdout.splitlines()[-1])
    assert any("importing it in full" in m and "load_submodules" in m for m in messages), messages
