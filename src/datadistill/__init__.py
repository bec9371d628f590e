"""datadistill: condense a labelled image dataset into a few synthetic images per class."""
from ._version import __version__
from .api import distill
from .config import DistillConfig, EvalConfig
from .data import load_dataset
from .errors import DatadistillError
from .evaluate import evaluate
from .nets import make_net
from .perf import tune_allocator
from .synset import SyntheticSet

__all__ = ["__version__", "DistillConfig", "EvalConfig", "distill", "evaluate", "load_dataset", "make_net", "SyntheticSet", "DatadistillError", "tune_allocator"]
