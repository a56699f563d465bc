"""Speech to text and text to speech against a real `xinf serve`, with real models that ship on PyPI:
Whisper base (faster-whisper) and Piper's en_US joe voice. Speech made by Piper (and by espeak-ng when it is
installed) is transcribed back to the same words."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import wave
from collections.abc import Iterator

import pytest

pytest.importorskip("faster_whisper")
pytest.importorskip("piper")

from xinf.testing.server import ServerProcess

SENTENCE = "The quick brown fox jumps over the lazy dog."


def heard(got: list[str], said: list[str]) -> bool:
    """Whisper heard the sentence: same length, at most one word misheard (Piper's voice varies run to run:
    "quick" is sometimes heard as "quit")."""
    return len(got) == len(said) and sum(a != b for a, b in zip(got, said)) <= 1


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z ]", "", text.lower()).split()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with both built-in models launched by name from their packages."""
    server = ServerProcess(tmp_path_factory.mktemp("xinf-home"))
    server.start()
    try:
        server.launch(model_name="whisper-base", model_type="audio", model_uid="stt", beam_size=1)
        server.launch(model_name="piper-en-us-joe", model_type="audio", model_uid="tts")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def spoken(server: ServerProcess) -> bytes:
    """SENTENCE spoken by Piper through the OpenAI SDK, as a WAV file."""
    client = server.openai()
    return client.audio.speech.create(model="tts", voice="alloy", input=SENTENCE, response_format="wav").content


def test_speech_is_a_wav_of_the_voice(spoken: bytes) -> None:
    with wave.open(io.BytesIO(spoken)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (22050, 1, 2)
        assert 1.0 < w.getnframes() / w.getframerate() < 10.0


def test_round_trip_piper_to_whisper_with_the_openai_sdk(server: ServerProcess, spoken: bytes) -> None:
    client = server.openai()
    text = client.audio.transcriptions.create(model="stt", file=("speech.wav", spoken), language="en").text
    assert heard(words(text), words(SENTENCE)), text


def test_verbose_json_words_srt_and_vtt(server: ServerProcess, spoken: bytes) -> None:
    client = server.openai()
    verbose = client.audio.transcriptions.create(
        model="stt",
        file=("speech.wav", spoken),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.language == "en" and verbose.duration > 1
    assert heard([w.word.strip(" .").lower() for w in verbose.words][:3], ["the", "quick", "brown"])
    assert verbose.segments[0].start < verbose.segments[-1].end <= verbose.duration + 0.5
    srt = client.audio.transcriptions.create(model="stt", file=("s.wav", spoken), response_format="srt")
    assert srt.startswith("1\n00:00:0") and " --> " in srt
    vtt = client.audio.transcriptions.create(model="stt", file=("s.wav", spoken), response_format="vtt")
    assert vtt.startswith("WEBVTT")


def test_translation_and_xinference_client_handles(server: ServerProcess, spoken: bytes) -> None:
    from xinference_client import RESTfulClient

    client = RESTfulClient(server.url)
    stt, tts = client.get_model("stt"), client.get_model("tts")
    assert heard(words(stt.transcriptions(spoken)["text"]), words(SENTENCE))
    assert heard(words(stt.translations(spoken)["text"]), words(SENTENCE))  # English stays English
    audio = tts.speech("Hello there.", response_format="flac")
    assert audio[:4] == b"fLaC"
    streamed = list(tts.speech("One sentence. And another sentence.", response_format="pcm", stream=True))
    assert len(b"".join(streamed)) > 22050  # more than half a second of 16-bit samples


@pytest.mark.parametrize(
    ("fmt", "magic"),
    [("mp3", (b"ID3", b"\xff\xfb", b"\xff\xf3")), ("opus", (b"OggS",)), ("aac", (b"\xff\xf1", b"\xff\xf9"))],
)
def test_compressed_formats_decode(server: ServerProcess, fmt: str, magic: tuple[bytes, ...]) -> None:
    av = pytest.importorskip("av")
    client = server.openai()
    data = client.audio.speech.create(model="tts", voice="", input="Testing.", response_format=fmt).content
    assert data.startswith(magic)
    with av.open(io.BytesIO(data)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert samples > 0


def test_espeak_speech_is_transcribed(server: ServerProcess, tmp_path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = tmp_path / "espeak.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "-s", "140", "Please open the window."], check=True, timeout=60)
    with wav.open("rb") as f:
        text = server.openai().audio.transcriptions.create(model="stt", file=f).text
    assert words(text) == ["please", "open", "the", "window"]


def test_bad_audio_and_bad_speech_requests_are_4xx(server: ServerProcess) -> None:
    http = server.http
    bad = http.post("/v1/audio/transcriptions", data={"model": "stt"}, files={"file": ("a.wav", b"not audio at all")})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_audio"
    missing = http.post("/v1/audio/transcriptions", data={"model": "stt"}, files={"x": ("a", b"1")})
    assert missing.status_code == 400
    assert http.post("/v1/audio/transcriptions", json={"model": "stt"}).json()["error"]["param"] == "file"
    fmt = http.post(
        "/v1/audio/transcriptions", data={"model": "stt", "response_format": "xml"}, files={"file": ("a", b"1")}
    )
    assert fmt.status_code == 400 and fmt.json()["error"]["param"] == "response_format"
    wrong_model = http.post("/v1/audio/transcriptions", data={"model": "tts"}, files={"file": ("a", b"1")})
    assert wrong_model.status_code == 400 and "not a speech-to-text model" in wrong_model.json()["error"]["message"]
    for body, param in [
        ({"model": "tts", "input": "hi", "voice": "nobody"}, "voice"),
        ({"model": "tts", "input": "   "}, "input"),
        ({"model": "tts", "input": "x" * 5000}, "input"),
        ({"model": "tts", "input": "hi", "response_format": "ogg"}, "response_format"),
        ({"model": "tts", "input": "hi", "speed": 9}, "speed"),
        ({"model": "stt", "input": "hi"}, "model"),
    ]:
        response = http.post("/v1/audio/speech", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param
    assert http.post("/v1/rerank", json={"model": "tts", "query": "q", "documents": ["d"]}).status_code == 400


def test_metrics_count_seconds_heard_and_spoken(server: ServerProcess, spoken: bytes) -> None:
    metrics = server.http.get("/metrics").text.splitlines()
    heard = [x for x in metrics if x.startswith('xinf_served_units_total{model="stt"') and "audio_seconds_in" in x]
    spoken_s = [x for x in metrics if x.startswith('xinf_served_units_total{model="tts"') and "audio_seconds_out" in x]
    assert heard and float(heard[0].split()[-1]) > 2
    assert spoken_s and float(spoken_s[0].split()[-1]) > 2


def test_streamed_transcription_events_with_the_openai_sdk(server: ServerProcess, spoken: bytes) -> None:
    """stream=true: transcript.text.delta events as segments are heard, then transcript.text.done with all of it."""
    client = server.openai()
    whole = client.audio.transcriptions.create(model="stt", file=("speech.wav", spoken), language="en").text
    events = list(
        client.audio.transcriptions.create(model="stt", file=("speech.wav", spoken), language="en", stream=True)
    )
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and set(kinds[:-1]) == {"transcript.text.delta"}, kinds
    deltas = "".join(e.delta for e in events[:-1])
    assert deltas.strip() == events[-1].text == whole

    raw = server.http.post(
        "/v1/audio/translations", files={"file": ("speech.wav", spoken)}, data={"model": "stt", "stream": "true"}
    )
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    assert '"type":"transcript.text.done"' in raw.text.replace(" ", "")

    # What a stream cannot carry, and audio that cannot be decoded, are 400s before any event.
    srt = server.http.post(
        "/v1/audio/transcriptions",
        files={"file": ("speech.wav", spoken)},
        data={"model": "stt", "stream": "true", "response_format": "srt"},
    )
    assert srt.status_code == 400 and srt.json()["error"]["param"] == "response_format"
    bad = server.http.post(
        "/v1/audio/transcriptions",
        files={"file": ("speech.wav", b"not audio")},
        data={"model": "stt", "stream": "true"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_audio"
