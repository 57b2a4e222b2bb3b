"""The benchmark's own error: a user mistake in its inputs or its target."""

from __future__ import annotations

from expert_deploy.errors import ExpertDeployError


class BenchError(ExpertDeployError):
    """A benchmark input (prompts, lengths, target, results file) is unusable, or the target
    does not answer; the message names the file or URL and what to change."""
