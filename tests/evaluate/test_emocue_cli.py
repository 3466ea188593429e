"""`emofuse evaluate cues PRED REF` (EmoCue-360 from the command line)."""

import json
from pathlib import Path

from typer.testing import CliRunner

from emofuse.cli import app

GOLD = Path(__file__).resolve().parents[1] / "data" / "emocue_gold.jsonl"


def test_explanations_scored_against_themselves_and_a_missing_one(tmp_path):
    rows = [json.loads(line) for line in GOLD.read_text(encoding="utf-8").splitlines()]
    ref = tmp_path / "ref.jsonl"
    ref.write_text("\n".join(json.dumps(r) for r in rows[:5]) + "\n", encoding="utf-8")
    pred = tmp_path / "pred.jsonl"  # one sample without a prediction
    pred.write_text("\n".join(json.dumps(r) for r in rows[:4]) + "\n", encoding="utf-8")
    out = tmp_path / "report.json"
    res = CliRunner().invoke(app, ["evaluate", "cues", str(pred), str(ref), "--json", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert set(report) == {"emofuse", "released"}
    released, ours = report["released"], report["emofuse"]
    assert released["dropped"] == 1 and ours["missing_scored_zero"] == 1
    assert abs(released["emotional"]["f1"] - 1.0) < 1e-6
    assert ours["emotional"]["f1"] < released["emotional"]["f1"]  # the missing one scores 0
    assert "1 dropped" in res.output and "scored 0" in res.output


def test_a_bad_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "visual": ["x"]}\n{not json\n', encoding="utf-8")
    res = CliRunner().invoke(app, ["evaluate", "cues", str(bad), str(GOLD)])
    assert res.exit_code == 2
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "bad.jsonl" in errors[0] and "line 2" in errors[0]


def test_nothing_to_score_is_an_error_not_zeros(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    res = CliRunner().invoke(app, ["evaluate", "cues", str(empty), str(GOLD)])
    assert res.exit_code == 2 and "empty.jsonl: holds no explanations" in res.output
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "648", "visual": ["frown"]}\n', encoding="utf-8")
    res = CliRunner().invoke(app, ["evaluate", "cues", str(other), str(GOLD)])
    assert res.exit_code == 2 and "no sample id in common" in res.output


def test_emofuse_explanations_are_read_as_cue_lists(tmp_path):
    """`emofuse explain --json` output scores directly: words go to the emotional list."""
    out = tmp_path / "mine.json"
    res = CliRunner().invoke(
        app, ["explain", "-t", "I am furious with you", "-t", "What a lovely day", "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    from emofuse.evaluate.emocue import read_explanations

    lists = read_explanations(out)
    assert set(lists) == {"text0", "text1"}
    assert lists["text1"].emotional[0] == "feels joy" and lists["text1"].visual == []
    assert any("lovely" in c for c in lists["text1"].emotional)
    scored = CliRunner().invoke(app, ["evaluate", "cues", str(out), str(out)])
    assert scored.exit_code == 0 and "1.0000" in scored.output
