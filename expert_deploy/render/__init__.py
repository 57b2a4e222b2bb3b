"""Render a deployment's files from typed values: Triton model repositories, nginx.conf,
gateway configs and Ansible variables.

Templates only lay out values computed here in Python; one strict Jinja2 environment renders
them, every output is checked (no ``${`` left, config.pbtxt and YAML re-parsed by their
consumers' own parsers in the tests), and a whole deployment is written into a temporary folder
and renamed into ``<workdir>/rendered/`` so nothing is ever half-written.
"""

from __future__ import annotations

from expert_deploy.render.deployment import (
    RenderedFile,
    RenderResult,
    default_engine_dir,
    default_tokenizer_dir,
    render_deployment,
)

__all__ = [
    "RenderResult",
    "RenderedFile",
    "default_engine_dir",
    "default_tokenizer_dir",
    "render_deployment",
]
