"""The one exception the classifier raises on purpose."""

from __future__ import annotations


class ClassifierError(Exception):
    """A router artifact or its input is unusable; the message says what to do next.

    Raised for a corrupt or mismatched artifact directory, a corpus that cannot be fitted,
    and a c-BTM pickle that cannot be imported. ``router_service`` never imports
    ``expert_deploy``, so the CLI wraps this into its own error type.
    """
