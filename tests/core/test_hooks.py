"""One progress-hook protocol: plain lines when the output is not a terminal (logs, CI)."""

import io

from emofuse.hooks import ArtifactHook, Hooks, ProgressHook, TimingHook, call_hook


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_at_start_every_period_and_at_the_end(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr("emofuse.hooks.time.monotonic", clock)
    stream = io.StringIO()  # not a terminal: no bars, plain lines
    with ProgressHook(stream, every=30.0) as hook:
        hook("features minilm", total=1000, completed=0)
        for done in range(100, 1000, 100):
            clock.now += 10.0  # a batch every 10 s
            hook("features minilm", total=1000, completed=done)
        clock.now += 10.0
        hook("features minilm", total=1000, completed=1000)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "features minilm: 0/1000 (0%), 0 s"
    # not every batch: every 30 s; 300 in 30 s leaves 700 for ~70 s
    assert lines[1] == "features minilm: 300/1000 (30%), 30 s, ~70 s left"
    assert lines[-1] == "features minilm: 1000/1000 (100%), 100 s"  # the end is always shown
    assert len(lines) == 5


def test_hooks_fan_out_and_collect():
    timing, artifacts, seen = TimingHook(), ArtifactHook(), []
    hook = Hooks(timing, artifacts, None, lambda step, artifact=None, **kw: seen.append(step))
    hook("inference", total=2, completed=1)
    call_hook(hook, "inference", {"done": True}, total=2, completed=2)
    call_hook(None, "ignored")  # no hook: nothing happens
    assert seen == ["inference", "inference"]
    assert artifacts.artifacts == {"inference": {"done": True}}
    assert timing.seconds["inference"] >= 0.0
