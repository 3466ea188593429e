"""Real-time factor of ``emofuse analyze`` on long media, and the default model's test scores.

    python benchmarks/analyze.py                    # 1-min video + 10-min audio, 2 threads
    python benchmarks/analyze.py --audio-minutes 2  # a quicker look

Inputs are built from real RAVDESS recordings (``../shared/data/ravdess``; the bundled sample
clips when it is absent): a **video** of ``--video-minutes`` made by looping the bundled
audio-visual clip (speech every 3.3 s, a face in every frame), and an **audio** file of
``--audio-minutes`` of RAVDESS sentences with one second of silence between them. Each is
analysed by a fresh ``emofuse analyze`` process with the bundled default model, no feature
cache (what a user runs), ``--repeats`` times: ``rtf`` = wall seconds / media seconds of the
median run (target ≤ 0.25), that run's peak RSS, and every run's seconds (shared machines
drift: the spread says how much). Writes ``benchmarks/results/analyze.json`` with the command, the tree's
state, the machine, the threads, per input its duration, segments, seconds, rtf and peak RSS,
and the default model's test scores per modality (from its ``card.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _env import git_state, load_average, machine, require_clean  # benchmarks/_env.py

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "src/emofuse/datasets/sample"
SR = 16000


def build_audio(minutes: float, data: Path, out: Path) -> Path:
    from emofuse.features.media import load_audio
    from emofuse.testing import write_wav

    clips = sorted((data / "ravdess" / "speech16k").glob("*.wav")) or sorted(SAMPLE.glob("*.wav"))
    clips = [clips[i] for i in np.random.default_rng(0).permutation(len(clips))]  # mixed emotions
    target = int(minutes * 60 * SR)
    parts, n, i = [], 0, 0
    while n < target:
        wave = load_audio(clips[i % len(clips)])
        gap = np.zeros(SR, np.float32)
        parts += [wave, gap]
        n += wave.size + gap.size
        i += 1
    return write_wav(out, np.concatenate(parts)[:target])


def build_video(minutes: float, out: Path) -> Path:
    """Loop the bundled audio-visual RAVDESS clip (re-encoded: H.264 + AAC) to ``minutes``."""
    import av

    src = SAMPLE / "01-01-01-01-01-01-01.mp4"
    with av.open(str(src)) as c:
        vs = c.streams.video[0]
        rate = vs.average_rate
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    from emofuse.features.media import load_audio

    wave = load_audio(src, sr=SR)
    clip_s = len(frames) / float(rate)
    loops = int(np.ceil(minutes * 60 / clip_s))
    with av.open(str(out), "w") as c:
        v = c.add_stream("libx264", rate=rate)
        v.height, v.width = frames[0].shape[:2]
        v.pix_fmt = "yuv420p"
        a = c.add_stream("aac", rate=SR)
        a.layout = "mono"
        for _ in range(loops):
            for img in frames:
                for packet in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(packet)
        for packet in v.encode():
            c.mux(packet)
        audio = np.tile(
            np.pad(wave, (0, max(0, round(clip_s * SR) - wave.size)))[: round(clip_s * SR)], loops
        )
        step = 1024
        for k in range(0, audio.size, step):
            frame = av.AudioFrame.from_ndarray(
                audio[None, k : k + step].astype(np.float32), format="flt", layout="mono"
            )
            frame.sample_rate = SR
            for packet in a.encode(frame):
                c.mux(packet)
        for packet in a.encode():
            c.mux(packet)
    return out


def run(path: Path, threads: int, workdir: Path) -> dict[str, object]:
    """One fresh ``emofuse analyze`` process; wall time and peak RSS of that child."""
    from emofuse.features.media import probe

    duration = probe(path).duration or 0.0
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = Path(tempfile.mkdtemp(prefix=f"out-{path.stem}-", dir=workdir))  # nothing to reuse
    cmd = [str(REPO / ".venv/bin/emofuse"), "analyze", str(path), "--out", str(out)]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed:\n{errors.read().decode()[-2000:]}")
    peak = usage.ru_maxrss
    result = json.loads((out / f"{path.stem}.json").read_text())
    return {
        "duration_s": round(duration, 2),
        "segments": len(result["predictions"]),
        "segmentation": result["segmentation"],
        "seconds": round(wall, 2),
        "rtf": round(wall / duration, 4) if duration else None,
        "peak_rss_mb": round(peak / 1024, 1),
        "emotions": {
            e: sum(p["emotion"] == e for p in result["predictions"])
            for e in sorted({p["emotion"] for p in result["predictions"]})
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = os.environ.get("EMOFUSE_SHARED_DATA", REPO.parent / "shared" / "data")
    parser.add_argument("--data", type=Path, default=Path(default))
    parser.add_argument("--video-minutes", type=float, default=1.0)
    parser.add_argument("--audio-minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per input; the median run is reported"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/analyze.json")
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args()
    state = git_state()
    require_clean(state, args.allow_dirty)
    card = json.loads((REPO / "src/emofuse/default_model/card.json").read_text())
    result: dict[str, object] = {
        "command": " ".join([sys.executable, *sys.argv]),
        "git": state,
        "machine": machine(threads=args.threads) | {"load_average": load_average()},
        "threads": args.threads,
        "target_rtf": 0.25,
        "inputs": {},
        "default_model": {"scores": card["scores"], "combined": card.get("combined", {})},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = {
            f"video_{args.video_minutes:g}min": build_video(args.video_minutes, work / "video.mp4"),
            f"audio_{args.audio_minutes:g}min": build_audio(
                args.audio_minutes, args.data, work / "audio.wav"
            ),
        }
        for name, path in inputs.items():
            runs = [run(path, args.threads, work) for _ in range(args.repeats)]
            by_time = sorted(runs, key=lambda r: r["seconds"])  # type: ignore[arg-type,return-value]
            stats = dict(by_time[len(by_time) // 2])  # the median run
            stats["runs_seconds"] = [r["seconds"] for r in runs]
            result["inputs"][name] = stats  # type: ignore[index]
            print(name, json.dumps(stats), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()
