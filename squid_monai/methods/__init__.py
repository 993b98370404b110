"""Model families: one folder each (``squid/`` is SQUID), found by name through
:func:`~squid_monai.methods.base.get_family`; the interface is
:class:`~squid_monai.methods.base.ModelFamily`."""

from .base import ModelFamily, Scorer, family_names, get_family, get_recipe

__all__ = ["ModelFamily", "Scorer", "family_names", "get_family", "get_recipe"]
