import json

import pytest

from emofuse.analyze.transcripts import Turn, read_transcript, transcript_beside
from emofuse.errors import InputError


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_webvtt_times_speakers_and_markup(tmp_path):
    p = write(
        tmp_path,
        "a.vtt",
        "WEBVTT\n\n00:00:00.500 --> 00:00:02.250\n<v Ann>Hello there\n\n"
        "00:01:02.500 --> 00:01:04.000\n<v Bob>I am <b>so</b> angry!\n",
    )
    assert read_transcript(p) == [
        Turn(text="Hello there", start=0.5, end=2.25, speaker="Ann"),
        Turn(text="I am so angry!", start=62.5, end=64.0, speaker="Bob"),
    ]


def test_srt_keeps_milliseconds_and_joins_lines(tmp_path):
    p = write(
        tmp_path,
        "a.srt",
        "1\n00:00:00,500 --> 00:00:02,000\nHello\nthere\n\n2\n01:00:02,040 --> 01:00:04,000\nBye\n",
    )
    turns = read_transcript(p)
    assert [(t.text, t.start, t.end) for t in turns] == [
        ("Hello there", 0.5, 2.0),
        ("Bye", 3602.04, 3604.0),
    ]


def test_json_turns_and_wrapped_form(tmp_path):
    rows = [
        {"speaker": "A", "start": 0, "end": 1.5, "text": "hi"},
        {"speaker": "B", "start": 1.5, "end": 3, "text": "  "},
    ]
    assert read_transcript(write(tmp_path, "a.json", json.dumps(rows))) == [
        Turn(text="hi", start=0.0, end=1.5, speaker="A")
    ]
    wrapped = write(tmp_path, "b.json", json.dumps({"turns": [{"text": "no times"}]}))
    assert read_transcript(wrapped) == [Turn(text="no times")]


def test_plain_text_lines_and_speaker_prefixes(tmp_path):
    assert read_transcript(write(tmp_path, "a.txt", "Ann: good morning\n\nBob: hi: there\n")) == [
        Turn(text="good morning", speaker="Ann"),
        Turn(text="hi: there", speaker="Bob"),
    ]
    # not every line has a prefix: lines are kept whole
    assert [
        t.text for t in read_transcript(write(tmp_path, "b.txt", "Note: one\nplain line\n"))
    ] == ["Note: one", "plain line"]


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("e.txt", "  \n", "transcript is empty"),
        ("bad.json", "{", "invalid JSON at line 1"),
        ("half.json", '[{"text": "x", "start": 1}]', "only one of start and end"),
        (
            "back.json",
            '[{"text": "x", "start": 2, "end": 1}]',
            "turn 1 ends (1) at or before it starts (2)",
        ),
        (
            "nan.json",
            '[{"text": "x", "start": NaN, "end": 1}]',
            "start must be a non-negative number",
        ),
        (
            "mixed.json",
            '[{"text": "x", "start": 0, "end": 1}, {"text": "y"}]',
            "some turns have times",
        ),
        ("keys.json", '[{"text": "x", "begin": 0}]', "unknown keys ['begin']"),
        ("bad.vtt", "not a vtt file\n", "malformed WebVTT"),
        ("bad.srt", "1\nnonsense\n", "malformed SRT"),
        ("back.srt", "1\n00:00:02,000 --> 00:00:01,000\nx\n", "cue 1 ends"),
    ],
)
def test_bad_transcripts_are_one_line_naming_the_file(tmp_path, name, text, problem):
    p = write(tmp_path, name, text)
    with pytest.raises(InputError) as err:
        read_transcript(p)
    assert name in str(err.value) and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_not_utf8_and_missing(tmp_path):
    p = tmp_path / "x.txt"
    p.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="not UTF-8"):
        read_transcript(p)
    with pytest.raises(InputError, match="no such transcript"):
        read_transcript(tmp_path / "none.srt")


def test_transcript_beside_media(tmp_path):
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"")
    assert transcript_beside(media) is None
    srt = write(tmp_path, "clip.srt", "1\n00:00:00,000 --> 00:00:01,000\nx\n")
    write(tmp_path, "clip.txt", "x")
    assert transcript_beside(media) == srt  # timed formats first


def test_srt_override_tags_are_not_words(tmp_path):
    p = write(
        tmp_path, "a.srt", "1\n00:00:00,500 --> 00:00:02,000\n{\\an8}Hello {\\i1}there{\\i0}\n"
    )
    assert [t.text for t in read_transcript(p)] == ["Hello there"]


def test_plain_text_heading_and_screenplay_speakers(tmp_path):
    """A 'Meeting notes:' line over 'Name: words' lines is a heading, not a speaker or words;
    a 'NAME:' line of its own names the speaker of the lines below it."""
    notes = write(tmp_path, "notes.txt", "Meeting notes:\nAnn: I am furious.\nBob: Calm down.\n")
    assert read_transcript(notes) == [
        Turn(text="I am furious.", speaker="Ann"),
        Turn(text="Calm down.", speaker="Bob"),
    ]
    play = write(tmp_path, "play.txt", "ANN:\nI am furious.\nReally.\nBOB:\nCalm down.\n")
    assert read_transcript(play) == [
        Turn(text="I am furious.", speaker="ANN"),
        Turn(text="Really.", speaker="ANN"),
        Turn(text="Calm down.", speaker="BOB"),
    ]
    mixed = write(tmp_path, "mixed.txt", "Note: recorded at home.\nI am happy today.\n")
    assert read_transcript(mixed) == [
        Turn(text="Note: recorded at home."),
        Turn(text="I am happy today."),
    ]


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        (
            "neg.srt",
            "1\n-00:00:01,000 --> 00:00:02,000\nHello there.\n\n"
            "2\n00:00:02,500 --> 00:00:04,000\nSecond cue.\n",
            2,
        ),
        (
            "neg.vtt",
            "WEBVTT\n\n00:00.500 --> 00:01.000\nFirst.\n\n"
            "-00:01.000 --> 00:02.000\nHello there.\n",
            6,
        ),
    ],
)
def test_a_cue_webvtt_would_drop_is_an_error_naming_its_line(tmp_path, name, text, line):
    p = write(tmp_path, name, text)
    with pytest.raises(InputError, match=rf"{name}: line {line}: unreadable cue times '-00:0"):
        read_transcript(p)


@pytest.mark.parametrize(
    ("name", "text", "line", "shown"),
    [
        (  # webvtt-py dropped this cue without a word; the rest was analysed
            "garbled.srt",
            "1\n00:00:01,000 --> 00:00:02,000\nfirst words\n\n"
            "2\n00:00:0x,000 --> 00:00:03,000\ngarbled time\n",
            6,
            "00:00:0x,000",
        ),
        (  # was "transcript has no words"
            "inner.srt",
            "1\n00:00:-1,000 --> 00:00:02,000\nnegative\n",
            2,
            "00:00:-1,000",
        ),
        ("inner.vtt", "WEBVTT\n\n00:0x.500 --> 00:01.000\nFirst.\n", 3, "00:0x.500"),
    ],
)
def test_every_unreadable_time_line_is_an_error_naming_it(tmp_path, name, text, line, shown):
    p = write(tmp_path, name, text)
    with pytest.raises(InputError, match=rf"{name}: line {line}: unreadable cue times '{shown}"):
        read_transcript(p)


def test_an_arrow_in_the_words_is_not_a_cue(tmp_path):
    p = write(tmp_path, "a.srt", "1\n00:00:01,000 --> 00:00:02,000\nthis --> that\n")
    assert read_transcript(p) == [Turn(text="this --> that", start=1.0, end=2.0)]


def test_srt_speaker_prefixes_name_the_speakers(tmp_path):
    """'Tom: …' cues name Tom (the words lose the prefix); a lone 'Note: …' stays words."""
    p = write(
        tmp_path,
        "a.srt",
        "1\n00:00:01,000 --> 00:00:02,000\nTom: Kids are talking.\n\n"
        "2\n00:00:02,500 --> 00:00:04,000\nMia: By the door!\n\n"
        "3\n00:00:04,500 --> 00:00:05,000\nTom: Yes.\n",
    )
    assert [(t.speaker, t.text) for t in read_transcript(p)] == [
        ("Tom", "Kids are talking."),
        ("Mia", "By the door!"),
        ("Tom", "Yes."),
    ]
    lone = write(
        tmp_path,
        "b.srt",
        "1\n00:00:01,000 --> 00:00:02,000\nNote: this was recorded at home.\n\n"
        "2\n00:00:02,500 --> 00:00:04,000\nI am happy today.\n\n"
        "3\n00:00:04,500 --> 00:00:05,000\nReally happy.\n",
    )
    assert all(t.speaker is None for t in read_transcript(lone))
