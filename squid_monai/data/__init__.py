"""Data sets for SQUID: DigitAnatomy, datalists of real collections, and cached datasets.

Names are imported lazily (PEP 562) so that ``python -m squid_monai.data.datalist`` and
``python -m squid_monai.data.digitanatomy`` run their module exactly once.
"""

from importlib import import_module

_EXPORTS = {
    "squid_monai.data.datalist": (
        "apply_protocol",
        "build_chexpert",
        "build_folders",
        "build_from_folder",
        "build_zhanglab",
        "check_items",
        "load_datalist",
        "write_datalist",
    ),
    "squid_monai.data.datasets": (
        "SafeCacheDataset",
        "SkipBadItems",
        "make_dataset",
        "read_skip_report",
    ),
    "squid_monai.data.digitanatomy": (
        "ANOMALY_TYPES",
        "DigitAnatomy",
        "DigitAnatomyDataset",
        "digitanatomy_split",
        "inpainting_set",
        "render_preview",
        "write_digitanatomy",
    ),
    "squid_monai.data.digits": ("DigitBank", "load_digit_bank"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'squid_monai.data' has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
