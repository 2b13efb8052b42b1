"""Models: TOML files compiled to the model functions the kernels call.

=================== ========================================================================
``core``            :class:`Model`, :func:`load_model`, :func:`list_models`
``spec``            reading and validating a model file
``expr``            the safe expression compiler (an ast whitelist)
``codegen``         the generated module of the model's six functions
``cache``           the on-disk cache of generated modules, compile notices
``parameter_sets``  named parameter sets (``models/sets/*.toml``)
=================== ========================================================================

The built-in model files themselves are package data in ``cartpk/models/``.
"""

from __future__ import annotations

from .cache import cache_dir, compiled_kernels
from .core import Model, list_models, load_model, model_from_text
from .spec import SCALES, SOLVERS, Covariate, Parameter

__all__ = [
    "SCALES",
    "SOLVERS",
    "Covariate",
    "Model",
    "Parameter",
    "cache_dir",
    "compiled_kernels",
    "list_models",
    "load_model",
    "model_from_text",
]
