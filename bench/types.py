"""Rerank, speech and image models: xinf over HTTP against the same engine plugin called in-process.

    python -m bench types [rerank] [audio] [images] [--rounds 3] [--threads 1]

- rerank: (query, document) pairs scored per second, one request of ``--documents``
  documents at a time, through ``POST /v1/rerank`` and through the transformers
  plugin's ``rerank`` hook in this process (the tiny cross-encoder of
  ``tools/tinymodels_rerank.py``, or ``--rerank-model DIR``).
- audio: real-time factor (seconds of work per second of audio; lower is faster)
  of Whisper base (faster-whisper) transcribing a sentence spoken by Piper, and of
  Piper speaking it, through ``/v1/audio/transcriptions`` and ``/v1/audio/speech``
  and through the plugins' hooks in-process.  The ratio column is in-process RTF
  over xinf RTF (>= 0.95: xinf adds under 5%).
- images: images per second for ``--images`` concurrent 64x64 requests to the tiny
  Stable Diffusion pipeline of ``tools/tinymodels_diffusers.py``, with
  ``XINFERENCE_TEXT_TO_IMAGE_BATCHING_SIZE=64*64`` and without.

Both sides of each comparison take turns, one round each, and each figure is the
median of ``--rounds``.  Figures move with the machine's load: compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import median, say, table, tinymodels
from xinf.engine import Placement
from xinf.plugins import PluginHost
from xinf.registry import Registry
from xinf.testing.server import ServerProcess

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs back into the forest."
QUERY = "where does the cat sleep"


def hooks(engine: str, spec: Any, options: dict[str, Any]) -> tuple[PluginHost, Any]:
    """The engine's plugin loaded here as a replica loads it."""
    host = PluginHost.discover(only=[engine])
    return host, host.hook(engine, "load")(spec=spec, options=options, placement=Placement())


def timed(fn: Any) -> float:
    start = time.perf_counter()
    asyncio.run(fn()) if asyncio.iscoroutinefunction(fn) else fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------- rerank


def rerank(args: argparse.Namespace, home: Path) -> list[list[Any]]:
    tinymodels()  # puts tools/ on sys.path
    import tinymodels_rerank

    from xinf.localmodel import spec_from_path
    from xinf.operations import RerankRequest

    path = args.rerank_model or str(tinymodels_rerank.ensure())
    documents = [f"document {i}: the cat sleeps on mat number {i} near the door" for i in range(args.documents)]
    request = RerankRequest(query=QUERY, documents=documents)
    host, model = hooks("transformers", spec_from_path(path, "bench-rerank", None, None), {"threads": args.threads})
    hook = host.hook("transformers", "rerank")
    inproc, http = [], []
    with ServerProcess(home / "rerank") as server:
        server.launch(model_path=path, model_uid="rr", model_type="rerank", threads=args.threads)
        body = {"model": "rr", "query": QUERY, "documents": documents}
        for _ in range(args.rounds):

            async def local() -> None:
                for _ in range(args.requests):
                    await hook(model=model, request=request)

            def remote() -> None:
                for _ in range(args.requests):
                    server.http.post("/v1/rerank", json=body).raise_for_status()

            inproc.append(args.requests * len(documents) / timed(local))
            http.append(args.requests * len(documents) / timed(remote))
    a, b = median(inproc), median(http)
    return [["rerank pairs/s", f"{a:.0f}", f"{b:.0f}", f"{b / a:.2f}"]]


# ---------------------------------------------------------------- audio


def audio(args: argparse.Namespace, home: Path) -> list[list[Any]]:
    from xinf.operations import SpeechRequest, TranscribeRequest

    registry = Registry(None)
    from xinf import hub
    from xinf.settings import Settings

    settings = Settings.from_env()
    stt_spec = registry.candidates("whisper-base")[0]
    tts_spec = registry.candidates("piper-en-us-joe")[0]
    for spec in (stt_spec, tts_spec):
        spec.source.path = hub.local_path(spec, settings)
    stt_host, stt = hooks("faster-whisper", stt_spec, {"cpu_threads": args.threads})
    tts_host, tts = hooks("piper", tts_spec, {"threads": args.threads})
    transcribe, speak = stt_host.hook("faster-whisper", "transcribe"), tts_host.hook("piper", "speech")

    async def pcm() -> tuple[bytes, int]:
        parts, rate = [], 0
        async for chunk in speak(model=tts, request=SpeechRequest(input=SENTENCE)):
            parts.append(chunk.pcm)
            rate = chunk.sample_rate
        return b"".join(parts), rate

    raw, rate = asyncio.run(pcm())
    seconds = len(raw) / 2 / rate
    from xinf.audio import wav_header

    wav = wav_header(rate, 1, len(raw)) + raw
    rows: dict[str, tuple[list[float], list[float]]] = {"speech to text RTF": ([], []), "text to speech RTF": ([], [])}
    with ServerProcess(home / "audio") as server:
        server.launch(model_name="whisper-base", model_uid="stt", cpu_threads=args.threads)
        server.launch(model_name="piper-en-us-joe", model_uid="tts", threads=args.threads)
        request = TranscribeRequest(audio=wav)
        files = {"file": ("s.wav", wav)}
        body = {"model": "tts", "input": SENTENCE, "response_format": "pcm"}

        def local_stt() -> None:
            asyncio.run(transcribe(model=stt, request=request))

        def remote_stt() -> None:
            server.http.post("/v1/audio/transcriptions", data={"model": "stt"}, files=files).raise_for_status()

        def local_tts() -> None:
            asyncio.run(pcm())

        def remote_tts() -> None:
            server.http.post("/v1/audio/speech", json=body).raise_for_status()

        for _ in range(args.rounds):
            rows["speech to text RTF"][0].append(timed(local_stt) / seconds)
            rows["speech to text RTF"][1].append(timed(remote_stt) / seconds)
            rows["text to speech RTF"][0].append(timed(local_tts) / seconds)
            rows["text to speech RTF"][1].append(timed(remote_tts) / seconds)
    out = []
    for name, (local, remote) in rows.items():
        a, b = median(local), median(remote)
        out.append([name, f"{a:.3f}", f"{b:.3f}", f"{a / b:.2f}"])
    return out


# ---------------------------------------------------------------- images


def images(args: argparse.Namespace, home: Path) -> list[list[Any]]:
    tinymodels()
    import tinymodels_diffusers

    path = str(tinymodels_diffusers.ensure())
    results = {}
    for label, env in (
        ("without batching", {}),
        ("with batching", {"XINFERENCE_TEXT_TO_IMAGE_BATCHING_SIZE": "64*64"}),
    ):
        with ServerProcess(home / label.replace(" ", "-"), env={**env, "XINFERENCE_BATCH_INTERVAL": "0.05"}) as server:
            server.launch(
                model_path=path, model_uid="img", model_type="image", num_inference_steps=4, threads=args.threads
            )
            rates = []
            for _ in range(args.rounds):

                async def burst() -> None:
                    async with httpx.AsyncClient(base_url=server.url, timeout=600) as client:
                        body = {"model": "img", "prompt": "a red barn", "size": "64x64", "response_format": "b64_json"}
                        replies = await asyncio.gather(
                            *(
                                client.post("/v1/images/generations", json={**body, "seed": i})
                                for i in range(args.images)
                            )
                        )
                        for reply in replies:
                            reply.raise_for_status()

                rates.append(args.images / timed(burst))
            results[label] = median(rates)
    a, b = results["without batching"], results["with batching"]
    return [["images/s (64x64, tiny SD)", f"{a:.2f}", f"{b:.2f}", f"{b / a:.2f}"]]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench types", description=__doc__)
    parser.add_argument("parts", nargs="*", choices=["rerank", "audio", "images", []], default=[])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--requests", type=int, default=8, help="rerank requests per round")
    parser.add_argument("--documents", type=int, default=32, help="documents per rerank request")
    parser.add_argument("--images", type=int, default=4, help="concurrent image requests")
    parser.add_argument("--rerank-model", help="a cross-encoder directory (default: the tiny generated one)")
    args = parser.parse_args(argv)
    parts = args.parts or ["rerank", "audio", "images"]
    rows: list[list[Any]] = []
    image_rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="xinf-bench-types-") as tmp:
        for part in parts:
            say(f"-- {part}")
            if part == "images":
                image_rows += images(args, Path(tmp))
            else:
                rows += {"rerank": rerank, "audio": audio}[part](args, Path(tmp))
    if rows:
        print(table(["figure", "in-process", "xinf", "in-process / xinf cost (>= 0.95: xinf adds < 5%)"], rows))
    if image_rows:
        print(table(["figure", "without batching", "with batching", "with / without"], image_rows))
    return 0
