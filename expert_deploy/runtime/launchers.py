"""``launcher_for``: the launcher an inventory's ``runtime`` names.

One line per launcher, ``kind → "module:Class"``; the class takes the ``Settings``. Modules are
imported only when chosen, so ``process`` never loads the Docker SDK or ansible-runner.
"""

from __future__ import annotations

import importlib
from typing import cast

from expert_deploy.errors import UsageError
from expert_deploy.inventory.loader import LoadedInventory
from expert_deploy.runtime.launcher import Launcher
from expert_deploy.settings import Settings

LAUNCHERS: dict[str, str] = {
    "process": "expert_deploy.runtime.process_launcher:ProcessLauncher",
    "docker": "expert_deploy.runtime.docker_launcher:docker_launcher",
    "ansible": "expert_deploy.runtime.ansible_launcher:AnsibleLauncher",
}
#: Launchers with inventory options (``runtime.docker``): built from the settings *and* the
#: inventory when one is at hand (``up``, ``swap``); ``status``/``down`` need only the above.
WITH_INVENTORY: dict[str, str] = {
    "docker": "expert_deploy.runtime.docker_launcher:docker_launcher_for",
}


def launcher_for(kind: str, settings: Settings, loaded: LoadedInventory | None = None) -> Launcher:
    """A launcher of ``kind`` (``process``, ``docker``, ``ansible``), with ``loaded``'s
    runtime options when given.

    Raises:
        UsageError: no launcher of that kind exists (lists the ones that do).
    """
    target = LAUNCHERS.get(kind)
    if target is None:
        known = ", ".join(sorted(LAUNCHERS))
        raise UsageError(f"runtime {kind!r} has no launcher here; available: {known}")
    if loaded is not None and kind in WITH_INVENTORY:
        module_name, _, name = WITH_INVENTORY[kind].partition(":")
        return cast(Launcher, getattr(importlib.import_module(module_name), name)(settings, loaded))
    module_name, _, class_name = target.partition(":")
    factory = getattr(importlib.import_module(module_name), class_name)
    return cast(Launcher, factory(settings))
