"""``launcher_for``: the launcher an inventory's ``runtime`` names.

One line per launcher, ``kind → "module:Class"``; the class takes the ``Settings``. Modules are
imported only when chosen, so ``process`` never loads the Docker SDK or ansible-runner.
"""

from __future__ import annotations

import importlib
from typing import cast

from expert_deploy.errors import UsageError
from expert_deploy.runtime.launcher import Launcher
from expert_deploy.settings import Settings

LAUNCHERS: dict[str, str] = {
    "process": "expert_deploy.runtime.process_launcher:ProcessLauncher",
    "docker": "expert_deploy.runtime.docker_launcher:docker_launcher",
    "ansible": "expert_deploy.runtime.ansible_launcher:AnsibleLauncher",
}


def launcher_for(kind: str, settings: Settings) -> Launcher:
    """A launcher of ``kind`` (``process``, ``docker``, ``ansible``).

    Raises:
        UsageError: no launcher of that kind exists (lists the ones that do).
    """
    target = LAUNCHERS.get(kind)
    if target is None:
        known = ", ".join(sorted(LAUNCHERS))
        raise UsageError(f"runtime {kind!r} has no launcher here; available: {known}")
    module_name, _, class_name = target.partition(":")
    factory = getattr(importlib.import_module(module_name), class_name)
    return cast(Launcher, factory(settings))
