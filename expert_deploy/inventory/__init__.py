"""The inventory: typed models, YAML loading with line numbers, and error formatting."""

from expert_deploy.inventory.loader import (
    LoadedInventory,
    available_toolchains,
    load_inventory,
    load_toolchain,
    resolve_inventory_path,
)
from expert_deploy.inventory.models import Expert, Host, Inventory
from expert_deploy.inventory.toolchain import Toolchain

__all__ = [
    "Expert",
    "Host",
    "Inventory",
    "LoadedInventory",
    "Toolchain",
    "available_toolchains",
    "load_inventory",
    "load_toolchain",
    "resolve_inventory_path",
]
