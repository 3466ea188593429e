"""One small registry per kind of component.

A component is a class in one file, registered with a decorator::

    from emofuse.features.base import EXTRACTORS

    @EXTRACTORS.register("my-extractor")
    class MyExtractor(FeatureExtractor): ...

Built-in components are found by importing every module of the registry's package on first
lookup, so adding one needs no ``__init__`` edit. Third-party packages add components through the
entry-point group ``emofuse.<kind>`` (e.g. ``emofuse.extractors``), whose entry points name the
module to import.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata
import pkgutil
import re
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from emofuse.errors import ConfigError, UnknownComponentError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


class Registry(Generic[T]):
    """A name → class mapping for one kind of component.

    Args:
        kind: Singular noun used in messages (``"dataset"``, ``"extractor"``).
        package: Dotted package whose modules are imported to discover built-ins.
        entry_point_group: Entry-point group for plugins; defaults to ``emofuse.<kind>s``.

    Example:
        >>> reg = Registry[type]("widget", package=None)
        >>> @reg.register("round")
        ... class Round: ...
        >>> reg.get("round") is Round
        True
    """

    def __init__(self, kind: str, package: str | None, entry_point_group: str | None = None):
        self.kind = kind
        self.package = package
        self.entry_point_group = entry_point_group or f"emofuse.{kind}s"
        self._items: dict[str, T] = {}
        self._discovered = package is None
        self._lock = threading.RLock()

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator that registers its target under ``name``."""
        if not _NAME.match(name):
            raise ConfigError(
                f"{self.kind} name {name!r} must be lowercase letters, digits, '-', '_' or '.'"
            )

        def decorator(obj: T) -> T:
            with self._lock:
                existing = self._items.get(name)
                if (
                    existing is not None
                    and existing is not obj
                    and _qualname(existing) != _qualname(obj)
                ):
                    raise ConfigError(
                        f"{self.kind} {name!r} is registered twice: "
                        f"{_qualname(existing)} and {_qualname(obj)}"
                    )
                self._items[name] = obj
                with contextlib.suppress(AttributeError, TypeError):
                    obj.name = name  # type: ignore[attr-defined]
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the component registered as ``name``.

        Raises:
            UnknownComponentError: with the valid names and the closest match.
        """
        self._discover()
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=1, cutoff=0.5)
            raise UnknownComponentError(
                self.kind, name, self._items, close[0] if close else None
            ) from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._discover()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        """``(name, component)`` pairs, sorted by name."""
        for name in self.names():
            yield name, self._items[name]

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._items

    def _discover(self) -> None:
        if self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            pkg = importlib.import_module(self.package)  # type: ignore[arg-type]
            for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{self.package}."):
                if not info.name.rsplit(".", 1)[-1].startswith("_"):
                    importlib.import_module(info.name)
            for ep in importlib.metadata.entry_points(group=self.entry_point_group):
                ep.load()


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
