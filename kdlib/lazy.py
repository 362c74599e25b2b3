"""Start-up of the codec commands: CompressAI's coding modules without the heavy imports of its package
initialisers.

``import compressai`` runs ``compressai/__init__.py``, which imports every subpackage: the point-cloud
datasets and transforms import ``torch_geometric``, which imports ``torch._dynamo`` (2 to 10 s here),
and the entropy models import ``scipy.stats`` (about 1 s), all to code an image that uses none of
them. :func:`defer_compressai` first puts CompressAI's heavy subpackages in ``sys.modules`` as
deferred packages, whose ``__init__`` runs on the first attribute that their loaded submodules cannot
answer, and ``scipy.stats`` deferred too (the standard library's ``LazyLoader`` does not do: in Python
3.11 ``import scipy.stats`` itself reads the module's ``__spec__`` and loads it); then it imports
``compressai``, whose own ``__init__`` runs as usual. Submodules import as usual
(``compressai.models.google``), and code that needs a deferred package whole gets it whole on first
use: nothing is stubbed or copied. ``tests/test_cli.py`` pins the result to the CompressAI in
``requirements.txt``: which modules the codec commands load, and the same bytes either way.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types

HEAVY = ("datasets", "transforms", "registry", "models", "zoo", "latent_codecs", "losses", "optimizers")
# the leaves whose names the light modules take from a deferred package (compressai.models.google:
# register_model from compressai.registry; compressai.models.base: LatentCodec from compressai.latent_codecs)
ANSWERS = ("registry.torch", "latent_codecs.base")


class _Deferred(types.ModuleType):
    """A package whose ``__init__`` has not run: a name is first looked up in its loaded submodules,
    and only what none of them holds runs the ``__init__``."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        depth = self.__name__.count(".") + 1
        for key, module in list(sys.modules.items()):
            if key.startswith(self.__name__ + ".") and key.count(".") == depth and not isinstance(module, _Deferred) \
                    and name in vars(module):
                return vars(module)[name]
        self.__class__ = types.ModuleType  # the whole package, once
        self.__spec__.loader.exec_module(self)
        return getattr(self, name)


def _defer(spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
    """The module of ``spec`` in ``sys.modules``, deferred (:class:`_Deferred`)."""
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _Deferred
    sys.modules[spec.name] = module
    return module


def defer_compressai() -> None:
    """Import CompressAI with its heavy subpackages deferred (see the module's docstring); nothing
    when it is already imported."""
    if "compressai" in sys.modules:
        return
    if "scipy.stats" not in sys.modules:  # GaussianConditional's scale table only, which a loaded codec has
        setattr(importlib.import_module("scipy"), "stats", _defer(importlib.util.find_spec("scipy.stats")))
    search = importlib.util.find_spec("compressai").submodule_search_locations
    deferred = {name: _defer(importlib.machinery.PathFinder.find_spec(f"compressai.{name}", search)) for name in HEAVY}
    compressai = importlib.import_module("compressai")
    for name, module in deferred.items():
        setattr(compressai, name, module)
    for leaf in ANSWERS:
        importlib.import_module(f"compressai.{leaf}")
