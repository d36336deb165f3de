"""Prompt suites: data files validated on load and frozen by a content hash."""

from evalsvc.suites.model import PromptSpec, Suite
from evalsvc.suites.registry import list_suites, load_suite

__all__ = ["PromptSpec", "Suite", "list_suites", "load_suite"]
