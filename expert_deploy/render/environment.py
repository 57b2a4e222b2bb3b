"""The one Jinja2 environment, and the checks every rendered text goes through.

``autoescape`` is off on purpose: the outputs are config.pbtxt, nginx.conf and YAML, none of
them HTML, and HTML-escaping would corrupt quotes. Values that need quoting in a given format
go through a filter named after that format (``pbtxt``), so quoting is explicit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jinja2

from expert_deploy.errors import RenderError

#: ``${name}`` left over from an upstream template (fill_template.py syntax).
_PLACEHOLDER = re.compile(r"\$\{")


def pbtxt_string(value: object) -> str:
    """Quote ``value`` as a protobuf text-format string (JSON escaping is a valid subset)."""
    return json.dumps(str(value), ensure_ascii=True)


def make_environment(templates_dir: Path) -> jinja2.Environment:
    """A strict environment: an undefined name is an error, never an empty string."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 (not HTML; see the module docstring)
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pbtxt"] = pbtxt_string
    return env


def render_template(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    """Render ``name`` with ``context``; any template problem becomes a one-line RenderError.

    Raises:
        RenderError: the template is missing, has a syntax error, or uses an undefined value.
    """
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound as exc:
        where = getattr(env.loader, "searchpath", ["?"])
        raise RenderError(f"template {exc.name} not found in {', '.join(where)}") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"template {name}:{exc.lineno}: {exc.message}") from exc
    except jinja2.UndefinedError as exc:
        raise RenderError(f"template {name}: {exc.message}") from exc


def check_no_placeholders(text: str, where: str) -> None:
    """Fail when a ``${...}`` survives outside comments (``#`` to end of line).

    Raises:
        RenderError: names the file, line and the leftover text.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        code = line.split("#", 1)[0]
        if _PLACEHOLDER.search(code):
            raise RenderError(f"{where}:{number}: unfilled placeholder left: {line.strip()}")
