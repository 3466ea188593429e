"""Feature references, feature tables, batch collation and samplers (no training here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emofuse.data import (
    DialogueBatchSampler,
    FeatureRef,
    FeatureTable,
    UtteranceBatchSampler,
    collate,
    input_specs,
    parse_features,
)
from emofuse.errors import ConfigError
from emofuse.features import FeatureStore, get_extractor
from emofuse.models.base import IGNORE_INDEX
from emofuse.records import Labels, Utterance
from emofuse.spec import TaskSpec

SPEC = TaskSpec(
    name="t", emotion_labels=["neutral", "happy"], sentiment_range=(-3, 3), conversational=True
)


def _utt(
    i, text="hello there", dialogue=None, turn=None, emotion="happy", sentiment=1.0, media=None
):
    return Utterance(
        id=f"u{i}",
        dataset="t",
        split="train",
        text=text,
        dialogue_id=dialogue,
        turn=turn,
        media=media or {},
        labels=Labels(emotion=emotion, sentiment=sentiment),
    )


def _fill(store, ext, utts, fn):
    """Write synthetic arrays for ``utts`` into the store under the real extractor's key."""
    rows = []
    for u in utts:
        res = fn(u)
        rows.append((u, ext.signature(u), res))
    store.cache(ext).write(rows)


def test_feature_ref_parsing_and_errors():
    r = FeatureRef.parse("minilm:tokens")
    assert (r.extractor, r.output, r.key) == ("minilm", "tokens", "minilm:tokens")
    r2 = FeatureRef.parse(
        {"extractor": "minilm", "output": "pooled", "options": {"max_length": 64}}
    )
    assert r2.options == {"max_length": 64}
    for bad in ("minilm", "a:b:c", ":x"):
        with pytest.raises(ConfigError, match="extractor:output"):
            FeatureRef.parse(bad)
    with pytest.raises(ConfigError, match="unknown modality 'smell'"):
        parse_features({"smell": "face:pooled"})
    # the field's other names of a modality (MMSA's "vision") are accepted
    assert list(parse_features({"vision": "face:pooled"})) == ["face"]
    assert list(parse_features({"video": "face:pooled", "acoustic": "egemaps:lld"})) == [
        "audio", "face"
    ]
    specs = input_specs(parse_features({"text": "minilm:tokens", "audio": "egemaps:functionals"}))
    assert specs["text"].dim == 384 and specs["text"].kind == "sequence"
    assert specs["audio"].dim == 88 and specs["audio"].kind == "vector"
    with pytest.raises(ConfigError, match="minilm:pooled describes text, not audio"):
        input_specs({"audio": FeatureRef.parse("minilm:pooled")})
    with pytest.raises(ConfigError, match="no output 'tokens'"):
        input_specs(
            {
                "text": FeatureRef.parse(
                    {"extractor": "minilm", "output": "tokens", "options": {"token_states": False}}
                )
            }
        )


def test_table_loads_truncates_skips_failures_and_marks_missing_modalities(tmp_path):
    store = FeatureStore(tmp_path / "cache")
    text = get_extractor("minilm")
    audio = get_extractor("egemaps")
    utts = [
        _utt(0, text="a long one"),
        _utt(1, media={"audio": str(tmp_path / "a1.wav")}),
        _utt(2, text=None, media={"audio": str(tmp_path / "a2.wav")}),
        _utt(3, emotion=None, sentiment=None),
        _utt(4, text="bad one"),
        _utt(5, emotion="angry"),  # not in the spec
    ]
    from emofuse.errors import InputError

    _fill(
        store,
        text,
        [u for u in utts if u.text],
        lambda u: (
            InputError(u.id, "encoder refused it")
            if u.id == "u4"
            else {"pooled": np.ones(384, np.float32), "tokens": np.ones((200, 384), np.float32)}
        ),
    )
    _fill(
        store,
        audio,
        [u for u in utts if u.media],
        lambda u: {
            "functionals": np.full(88, 2.0, np.float32),
            "lld": np.arange(1000 * 25, dtype=np.float32).reshape(1000, 25),
        },
    )
    refs = parse_features({"text": "minilm:tokens", "audio": "egemaps:lld"})
    table = FeatureTable.load(utts, refs, store, SPEC, extract_missing=False)
    assert table.ids == ["u0", "u1", "u2", "u3"]
    assert "encoder refused it" in table.skipped["u4"]
    assert "angry" in table.skipped["u5"]
    items = {it.utt.id: it for it in table.items}
    assert items["u0"].features["text"].shape == (96, 384)  # head-truncated tokens
    assert "audio" not in items["u0"].features  # no audio input: absent, not an error
    lld = items["u1"].features["audio"]
    assert lld.shape == (300, 25) and lld[0, 0] == 0 and lld[-1, 0] == 999 * 25  # evenly spaced
    assert "text" not in items["u2"].features
    assert items["u3"].emotion == IGNORE_INDEX and math.isnan(items["u3"].sentiment)

    # "missing" keeps the utterance with the failed modality absent
    t2 = FeatureTable.load(utts, refs, store, SPEC, extract_missing=False, on_failure="missing")
    assert "u4" not in t2.ids  # it had no other modality
    # nothing cached and no extraction: skipped with the command to run
    t3 = FeatureTable.load([_utt(9, text="never seen")], refs, store, SPEC, extract_missing=False)
    assert not t3.items and "emofuse features extract" in t3.skipped["u9"]


def test_collate_follows_the_batch_contract():
    from emofuse.data import Item
    from emofuse.models.base import InputSpec

    inputs = {
        "text": InputSpec(feature="minilm:tokens", dim=4, kind="sequence"),
        "audio": InputSpec(feature="egemaps:functionals", dim=3, kind="vector"),
    }
    items = [
        Item(_utt(0, dialogue="dB", turn=7), {"text": np.ones((2, 4), np.float32)}, 1, 0.5),
        Item(
            _utt(1, dialogue="dA", turn=3),
            {"text": np.ones((5, 4), np.float32), "audio": np.ones((1, 3), np.float32)},
            0,
            math.nan,
        ),
        Item(_utt(2, dialogue="dB", turn=2), {"audio": np.ones((1, 3), np.float32)}),
    ]
    calls = []

    def tok(texts, contexts):
        assert contexts == [None] * len(texts)
        calls.append(texts)
        return {
            "input_ids": torch.ones(len(texts), 6, dtype=torch.long),
            "attention_mask": torch.ones(len(texts), 6, dtype=torch.long),
        }

    b = collate(items, SPEC, inputs, tok, indices=[10, 11, 12])
    assert b["text"].shape == (3, 5, 4) and b["text"].dtype == torch.float32
    assert b["text_mask"].tolist() == [[True] * 2 + [False] * 3, [True] * 5, [False] * 5]
    assert b["audio"].shape == (3, 1, 3) and b["audio_mask"][:, 0].tolist() == [False, True, True]
    assert b["dialogue"].tolist() == [0, 1, 0]  # renumbered in order of appearance
    assert b["turn"].tolist() == [1, 0, 0]  # dense rank of the turn within the batch
    assert b["emotion"].tolist() == [1, 0, IGNORE_INDEX]
    assert b["sentiment"][0] == 0.5 and torch.isnan(b["sentiment"][1:]).all()
    assert b["index"].tolist() == [10, 11, 12]
    assert b["text_input_ids"].shape == (3, 6) and calls == [["hello there"] * 3]
    # stand-alone clips carry no dialogue structure
    solo = [Item(_utt(0), {"text": np.ones((1, 4), np.float32)})]
    assert "dialogue" not in collate(solo, SPEC, inputs)


def test_samplers_are_deterministic_per_seed_and_epoch_and_split_across_ranks():
    s = UtteranceBatchSampler(50, 8, seed=3)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert list(s) == e0 and e0 != e1
    assert sorted(i for b in e0 for i in b) == list(range(50))
    assert list(UtteranceBatchSampler(50, 8, seed=4)) != e0
    ranks = [list(UtteranceBatchSampler(50, 8, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4  # 7 batches padded to 8
    assert {i for r in ranks for b in r for i in b} == set(range(50))

    dialogues = [[0, 1, 2], [3], [4, 5, 6, 7, 8, 9, 10, 11, 12], [13, 14]]
    d = DialogueBatchSampler(dialogues, 4, seed=0)
    batches = list(d)
    assert sorted(i for b in batches for i in b) == list(range(15))
    for dia in dialogues:  # every dialogue whole, in turn order, in one batch
        assert any(
            b[b.index(dia[0]) : b.index(dia[0]) + len(dia)] == dia for b in batches if dia[0] in b
        )
    assert max(len(b) for b in batches if 4 not in b) <= 4


def test_dialogue_sampler_has_a_fixed_length_and_covers_each_item_once():
    from emofuse.data import DialogueBatchSampler

    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 15, size=60)
    dialogues, start = [], 0
    for n in sizes:
        dialogues.append(list(range(start, start + n)))
        start += n
    epoch = {"value": 0}
    sampler = DialogueBatchSampler(dialogues, 32, seed=1, epoch_source=lambda: epoch["value"])
    lengths, orders = set(), []
    for e in range(5):
        epoch["value"] = e
        batches = list(sampler)
        lengths.add(len(batches))
        assert len(batches) == len(sampler)
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(start))  # every utterance exactly once
        for b in batches:  # dialogues stay whole and in turn order
            for d in dialogues:
                if d[0] in b:
                    pos = b.index(d[0])
                    assert b[pos : pos + len(d)] == d
        orders.append(batches)
    assert len(lengths) == 1  # Lightning fixes an epoch's length at the start
    assert orders[0] != orders[1]  # but the content is reshuffled every epoch


def test_length_bucketing_keeps_every_item_once_and_is_a_function_of_seed_and_epoch():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=203).tolist()
    s = UtteranceBatchSampler(203, 8, shuffle=True, seed=3, lengths=lengths, pool=4)
    s.set_epoch(1)
    first = list(s)
    assert sorted(i for b in first for i in b) == list(range(203))
    again = UtteranceBatchSampler(
        203, 8, shuffle=True, seed=3, lengths=lengths, pool=4, epoch_source=lambda: 1
    )
    assert first == list(again)
    s.set_epoch(2)
    assert list(s) != first

    def padding(batches):
        return sum(
            len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches
        )

    plain = list(UtteranceBatchSampler(203, 8, shuffle=True, seed=3, epoch_source=lambda: 1))
    assert padding(first) < padding(plain) / 3
    # unshuffled: length order
    ordered = [i for b in UtteranceBatchSampler(203, 8, shuffle=False, lengths=lengths) for i in b]
    assert [lengths[i] for i in ordered] == sorted(lengths)
