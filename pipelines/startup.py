"""Start the deploy app as it starts in its MAP image: without importing what it never uses.

Where all of ``pyproject.toml`` is installed (a development install, ``docker/deploy.Dockerfile``)
the app took about 18 CPU-s to reach its first study, most of it in imports it does not need:

1. ``monai/__init__`` imports each package of the ``monai`` namespace, then every module of it
   (the App SDK's operators and all of ``monai.apps`` included), each twice.
   :func:`start_like_the_map` lets MONAI import its packages as it does and skips the
   every-module pass; the app imports the modules it uses. (A bundle config's short
   ``_target_`` names resolve among imported modules: all of MONAI's packages are.)
2. MONAI, torch and the SDK import optional dependencies when their modules load: Ignite,
   MLflow, pandas, SciPy, scikit-image, matplotlib, ... The MAP does not install them
   (``pipelines/requirements.txt``); there each of those imports fails at once, MONAI keeps a
   stub that raises if called, and the app runs without them. :data:`NOT_IN_THE_MAP` makes them
   unimportable here too, so a run starts and behaves as in the MAP (an import of one on the
   deploy path fails here as it would there).

Step 1 leans on how ``monai/__init__`` calls ``load_submodules`` (MONAI 1.3 to 1.6: packages,
then every module). Should a MONAI release change that so that the short-cut fails, the app
warns and imports MONAI in full: slower to start, never broken.

Only the app's entry points call it (``python -m pipelines``, ``python -m pipelines.squid_app``),
before anything imports MONAI; importing ``pipelines`` never does, so a process that embeds the
operators keeps its imports as they are.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__all__ = ["NOT_IN_THE_MAP", "start_like_the_map"]

#: Top-level import names that the app's imports reach and that the MAP image does not install
#: (tests/pipelines/test_startup.py checks them against pipelines/requirements.txt).
NOT_IN_THE_MAP = (
    "IPython",
    "ignite",
    "jsonschema",
    "matplotlib",
    "mlflow",
    "pandas",
    "pydot",
    "scipy",
    "skimage",
    "sklearn",
    "tifffile",
    "tqdm",
)


class _NotInTheMap(importlib.abc.MetaPathFinder):
    """Imports of :data:`NOT_IN_THE_MAP` fail as they do where the package is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in NOT_IN_THE_MAP:
            raise ModuleNotFoundError(
                f"No module named {name!r} (the MAP image does not install it: "
                "pipelines/startup.py)",
                name=name,
            )
        return None


def start_like_the_map() -> None:
    """Hide :data:`NOT_IN_THE_MAP` and import ``monai`` without its every-module pass.

    Does nothing once ``monai`` is imported: what is imported cannot be undone.
    """
    if "monai" in sys.modules:
        return
    if not any(isinstance(finder, _NotInTheMap) for finder in sys.meta_path):
        sys.meta_path.insert(0, _NotInTheMap())
    try:
        _import_monai_packages_only()
    except Exception as error:  # MONAI's start-up changed: take its own, full import
        warnings.warn(
            f"pipelines/startup.py: importing MONAI without its every-module pass failed ({error!r}); "
            "importing it in full (a slower start)",
            RuntimeWarning,
            stacklevel=2,
        )
        importlib.import_module("monai")


def _import_monai_packages_only() -> None:
    """Run ``monai/__init__`` (warning filters, version, TF32 check) with ``load_submodules``
    doing its first pass (every package, in MONAI's order, which its circular imports rely on)
    but not the second (every module)."""
    spec = importlib.util.find_spec("monai")
    monai = importlib.util.module_from_spec(spec)
    sys.modules["monai"] = monai
    try:
        from monai._version import get_versions

        # monai.utils reads monai.__version__, which monai/__init__ sets only before its own import of it
        monai.__version__ = str(get_versions().get("version", "0+unknown"))
        from monai.utils import module as monai_module

        load_submodules = monai_module.load_submodules

        def packages_only(basemod, load_all=True, exclude_pattern="(.*[tT]est.*)|(_.*)"):
            return ([], []) if load_all else load_submodules(basemod, False, exclude_pattern)

        monai_module.load_submodules = packages_only
        try:
            spec.loader.exec_module(monai)
        finally:
            monai_module.load_submodules = load_submodules
    except BaseException:
        for name in [name for name in sys.modules if name == "monai" or name.startswith("monai.")]:
            del sys.modules[name]
        raise
