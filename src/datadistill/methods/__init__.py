"""Distillation methods, all behind the Distiller interface of `base.py`.

Importing this package registers the built-in methods (each module's ``@register_method``) and the
artifacts they define (``@register_artifact``): the families are ``distribution`` (DM),
``attention`` (DataDAM), ``gradient`` (DC, DSA), ``coreset`` (random, herding, k-center),
``trajectory`` (MTT, DATM, PAD, their expert store and curriculum) and ``decoupled`` (SRe2L, RDED,
and the teacher's relabelling)."""
from .base import Distiller, ImageDistiller, initial_synset
from .registry import available_methods, get_method, register_method

from . import attention, coreset, decoupled, distribution, gradient, trajectory  # noqa: E402,F401  (registration)

__all__ = ["Distiller", "ImageDistiller", "initial_synset", "available_methods", "get_method", "register_method"]
