"""The local registry server: the registry API over SQLite, with faults on purpose."""

from .app import create_app
from .faults import Faults
from .store import Store

__all__ = ["Faults", "Store", "create_app"]
