"""Applications of a distilled set: an architecture-search proxy and continual-learning memory.

>>> from datadistill.apps import architecture_search, continual_learning
"""
from .continual import ContinualResult, StepResult, class_groups, continual_learning, restrict_classes, restrict_splits
from .nas import (
    FAMILIES,
    NASResult,
    VariantResult,
    architecture_search,
    best_agreement,
    family,
    rank_correlations,
    stratified_subset,
    variant_name,
)

__all__ = [
    "FAMILIES",
    "ContinualResult",
    "NASResult",
    "StepResult",
    "VariantResult",
    "architecture_search",
    "best_agreement",
    "class_groups",
    "continual_learning",
    "family",
    "rank_correlations",
    "restrict_classes",
    "restrict_splits",
    "stratified_subset",
    "variant_name",
]
