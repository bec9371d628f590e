"""Distillation methods, all behind the Distiller interface of `base.py`."""
from .base import Distiller, ImageDistiller, initial_synset
from .registry import available_methods, get_method, register_method

__all__ = ["Distiller", "ImageDistiller", "initial_synset", "available_methods", "get_method", "register_method"]
