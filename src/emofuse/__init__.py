"""emofuse — emotion and sentiment from speech, faces and words, with the cues that support them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emofuse._version import __version__

__all__ = ["InputError", "Utterance", "__version__", "load_dataset"]

if TYPE_CHECKING:
    from emofuse.datasets import load_dataset
    from emofuse.errors import InputError
    from emofuse.records import Utterance


def __getattr__(name: str) -> Any:  # lazy: keep `import emofuse` and `emofuse --help` fast
    if name == "load_dataset":
        from emofuse.datasets import load_dataset

        return load_dataset
    if name == "Utterance":
        from emofuse.records import Utterance

        return Utterance
    if name == "InputError":
        from emofuse.errors import InputError

        return InputError
    raise AttributeError(f"module 'emofuse' has no attribute {name!r}")
