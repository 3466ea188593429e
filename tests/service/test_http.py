"""Every endpoint, auth, limits and the bad inputs, over real HTTP to a uvicorn process.

The shared service runs with API keys, a 4 MiB upload cap, 10 s for clips answered at once,
120 s for jobs, 50 turns, one media worker and a queue of one.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import re
import socket
import time

import httpx
import pytest

from emofuse.analyze.result import Analysis
from emofuse.errors import ConfigError
from emofuse.schema import Prediction
from emofuse.service.net import listening_socket

from .servers import KEY, wait_job


def error_of(r: httpx.Response) -> str:
    """The one-line error of a 4xx answer (and checks its shape)."""
    assert r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str) and "\n" not in body["error"] and body["error"]
    return body["error"]


# -- health, models, docs, page -----------------------------------------------------------------
def test_health_models_docs_and_page(api):
    with api.client(key=None) as anon:
        assert anon.get("/healthz").json()["status"] == "ok"
        ready = anon.get("/readyz").json()
        assert ready["status"] == "ready" and ready["models"] == {"default": "ready"}
        assert ready["database"] == "ok"
        schema = anon.get("/openapi.json").json()
        for path in (
            "/v1/analyze",
            "/v1/analyze/text",
            "/v1/jobs",
            "/v1/jobs/{job_id}",
            "/v1/models",
        ):
            assert path in schema["paths"], path
        text_op = schema["paths"]["/v1/analyze/text"]["post"]
        assert text_op["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/TextAnalysis"
        }
        assert "Prediction" in schema["components"]["schemas"]
        assert schema["components"]["securitySchemes"]  # keys are on: the docs say so
        for page in ("/docs", "/redoc", "/"):
            r = anon.get(page)
            assert r.status_code == 200, page
            # nothing is fetched from elsewhere: every src/href is local
            external = re.findall(r'(?:src|href)="(https?://[^"]+)"', r.text)
            assert external == [], (page, external)
        assert "default-src 'self'" in anon.get("/").headers["content-security-policy"]
        for asset in ("/static/app.js", "/static/style.css", "/docs-assets/swagger-ui-bundle.js"):
            assert anon.get(asset).status_code == 200, asset


def test_accepted_connections_send_at_once():
    """The service's connections have TCP_NODELAY (no ~40 ms delayed-ACK stall per keep-alive
    request): set on the listening socket, which every accepted connection inherits."""
    with listening_socket("127.0.0.1", 0) as server:
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            accepted, _ = server.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0


def test_listening_on_an_address_in_use_is_one_line():
    with listening_socket("127.0.0.1", 0) as taken:
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: "):
            listening_socket("127.0.0.1", port)


def test_api_keys(api):
    with api.client(key=None) as anon:
        r = anon.get("/v1/models")
        assert r.status_code == 401 and "API key" in error_of(r)
        r = anon.get("/v1/models", headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and "not accepted" in error_of(r)
        r = anon.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200
        r = anon.post("/v1/analyze/text", json={"text": "hello"})
        assert r.status_code == 401
        assert anon.get("/healthz").status_code == 200  # probes need no key


def test_models(client):
    (m,) = client.get("/v1/models").json()
    assert m["name"] == "default" and m["ready"] and "text" in m["inputs"]
    assert "joy" in m["labels"] and m["sentiment_range"] == [-3.0, 3.0]


# -- text --------------------------------------------------------------------------------------------
def test_text_one_utterance(client):
    r = client.post("/v1/analyze/text", json={"text": "I am so happy today, this is wonderful!"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "default" and body.get("skipped", {}) == {}
    (p,) = [Prediction.model_validate(x) for x in body["predictions"]]
    assert p.id == "text" and p.emotion == "joy" and p.sentiment > 0
    assert abs(sum(p.probabilities.values()) - 1) < 1e-3
    # experts of absent modalities are listed, marked unusable, with no made-up probabilities
    experts = body["predictions"][0]["experts"]
    assert set(experts) == {"audio", "face", "text"}
    for name in ("audio", "face"):
        assert experts[name] == {"gate": 0.0, "usable": False, "units": {}}, experts[name]
    assert experts["text"]["usable"] and experts["text"]["gate"] == 1.0
    assert abs(sum(experts["text"]["probabilities"].values()) - 1) < 1e-3


def test_concurrent_text_requests_are_batched_and_each_gets_its_own_answer(api):
    texts = [f"Sentence number {i}: {'great news' if i % 2 else 'awful news'}." for i in range(24)]

    def ask(text: str) -> httpx.Response:
        with api.client() as c:
            return c.post("/v1/analyze/text", json={"text": text})

    with cf.ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(ask, texts))
    assert [r.status_code for r in answers] == [200] * len(texts)
    assert [r.json()["predictions"][0]["text"] for r in answers] == texts


def test_text_dialogue_keeps_order_ids_and_skips_unusable_turns(client):
    turns = [
        {"speaker": "Ann", "text": "We won the match!"},
        {"speaker": "Bob", "text": "我今天很高兴我今天很高兴"},  # not English: minilm refuses it
        {"text": "I hate losing like this, it is awful."},
    ]
    r = client.post("/v1/analyze/text", json={"turns": turns, "dialogue_id": "match"})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [p["id"] for p in body["predictions"]]
    assert ids == ["match_turn000", "match_turn002"]
    assert all(p["dialogue_id"] == "match" for p in body["predictions"])
    assert "not Latin" in body["skipped"]["match_turn001"]
    r = client.post("/v1/analyze/text", json={"turns": [turns[1]]})
    assert r.status_code == 422 and "Latin" in error_of(r)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ('{"text": "I am so happ', 422, "malformed JSON"),
        ("[1, 2", 422, "malformed JSON"),
        ("{}", 422, "either 'text'"),
        ('{"text": "a", "turns": [{"text": "b"}]}', 422, "either 'text'"),
        ('{"text": "   "}', 422, "empty"),
        ('{"text": 5}', 422, "text"),
        ('{"turns": []}', 422, "at least one turn"),
        ('{"turns": [{"txt": "hi"}]}', 422, "turns.0"),
        ('{"text": "hi", "colour": "red"}', 422, "colour"),
        ('{"text": "hi", "model": "nope"}', 404, "no model 'nope'"),
        ('{"text": "hi", "language": "english"}', 422, "language"),
        (json.dumps({"turns": [{"text": f"turn {i}"} for i in range(51)]}), 413, "51 turns"),
        (json.dumps({"turns": [{"text": f"turn {i}"} for i in range(5000)]}), 413, "5000 turns"),
        (json.dumps({"text": "x" * 6000}), 413, "6000 characters"),
        (json.dumps({"text": "word " * 600_000}), 413, "larger than"),
    ],
    ids=lambda v: v[:24] if isinstance(v, str) else str(v),
)
def test_text_bad_input_is_a_4xx_naming_the_problem(client, body, status, says):
    r = client.post("/v1/analyze/text", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert says in error_of(r)


@pytest.mark.parametrize("endpoint", ["/v1/analyze/text", "/v1/jobs"])
@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"text": "caf\xe9 au lait"}', "the body is not UTF-8 JSON (byte 13"),
        ('{"text": "hi"}'.encode("utf-16"), "the body is not UTF-8 JSON (byte 0"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    ],
    ids=["latin-1", "utf-16", "nested"],
)
def test_a_json_body_that_cannot_be_decoded_is_a_422_saying_why(client, endpoint, body, says):
    """Not a bare 400 'error parsing the body': every decoding failure is a 422 naming it."""
    if endpoint == "/v1/jobs" and says == "nested too deeply":
        says = "recursion limit"  # the jobs endpoint's own JSON reader says it its way
    r = client.post(endpoint, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert says in error_of(r)


def test_every_endpoint_with_a_body_refuses_another_content_type_with_415(api, client):
    """Each operation of the OpenAPI schema that takes a body names the Content-Types it takes."""
    schema = client.get("/openapi.json").json()
    taking = {
        (method.upper(), path): list(op["requestBody"]["content"])
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if "requestBody" in op
    }
    assert {("POST", "/v1/analyze/text"), ("POST", "/v1/analyze"), ("POST", "/v1/jobs")} <= set(
        taking
    )
    for (method, path), types in taking.items():
        for sent in ("text/plain", "application/x-www-form-urlencoded", None):
            if sent in types:
                continue
            headers = {"Content-Type": sent} if sent else {}
            r = client.request(method, path, content=b'{"text": "hi"}', headers=headers)
            assert r.status_code == 415, (method, path, sent, r.text)
            line = error_of(r)
            assert all(t in line for t in types), (path, line)
            assert (sent or "none was sent") in line
    # the other way round: JSON to the upload endpoint, a form to the text endpoint
    r = client.post("/v1/analyze", json={"text": "hi"})
    assert r.status_code == 415 and "takes Content-Type: multipart/form-data" in error_of(r)
    r = client.post("/v1/analyze/text", files={"file": ("a.wav", b"RIFF")})
    assert r.status_code == 415 and "application/json, not multipart/form-data" in error_of(r)
    r = client.post(
        "/v1/analyze/text",
        content='{"text": "hi"}'.encode("latin-1"),
        headers={"Content-Type": "application/json; charset=latin-1"},
    )
    assert r.status_code == 415 and "UTF-8 JSON" in error_of(r)
    r = client.post(
        "/v1/analyze/text",
        content=b'{"text": "I am glad"}',
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
    assert r.status_code == 200, r.text
    assert "Traceback" not in api.output()


def test_unknown_route_and_method_are_json(client):
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and error_of(r)
    r = client.put("/v1/analyze/text", json={"text": "hi"})
    assert r.status_code == 405 and error_of(r)


# -- clips -------------------------------------------------------------------------------------------
def upload(client, path, name=None, endpoint="/v1/analyze", **fields):
    with open(path, "rb") as fh:
        return client.post(endpoint, files={"file": (name or path.name, fh)}, data=fields)


def test_clip_is_analysed_by_content_not_name(api, client, media):
    r = upload(client, media["wav"])
    assert r.status_code == 200, r.text
    a = Analysis.model_validate(r.json())
    assert a.kind == "audio" and a.source == media["wav"].name and a.predictions
    assert all(p.source == media["wav"].name for p in a.predictions)
    assert "/tmp" not in r.text and str(api.state) not in r.text  # no server paths
    # a WAV named .txt is still a WAV (and never read as a transcript)
    r = upload(client, media["wav_named_txt"])
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "audio" and r.json()["source"] == "speech.txt"
    api.assert_no_temp_files()


@pytest.mark.parametrize(
    ("name", "status", "says"),
    [
        ("script_named_mp4", 415, "not an audio, video or image file"),
        ("pickle_named_wav", 415, "not an audio, video or image file"),
        ("empty", 422, "empty (0 bytes)"),
        ("oversized", 413, "larger than 4.0 MiB"),
        ("truncated_mp4", 422, "cannot be read as MP4"),
        ("long_flac", 413, "POST /v1/jobs"),
        ("silence", 422, "speech"),
    ],
)
def test_upload_bad_input_is_a_4xx_and_leaves_no_temp_files(api, client, media, name, status, says):
    r = upload(client, media[name])
    assert r.status_code == status, r.text
    assert says in error_of(r)
    api.assert_no_temp_files()
    assert client.post("/v1/analyze/text", json={"text": "still fine?"}).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "status", "says"),
    [
        (
            {"content": b"just bytes", "headers": {"Content-Type": "application/octet-stream"}},
            415,
            "multipart",
        ),
        ({"files": {"media": ("a.wav", b"RIFF")}}, 422, "unknown form field 'media'"),
        ({"data": {"model": "default"}, "files": {"other": ("x", b"")}}, 422, "unknown form field"),
        (
            {
                "content": b"--xx\r\nbroken",
                "headers": {"Content-Type": "multipart/form-data; boundary=xx"},
            },
            422,
            "",
        ),
        (
            {"files": {"file": ("a.wav", b"RIFF0000WAVE")}, "data": {"model": "nope"}},
            404,
            "no model",
        ),
    ],
    ids=["not-multipart", "wrong-field", "unknown-field", "malformed", "unknown-model"],
)
def test_malformed_uploads(api, client, kwargs, status, says):
    r = client.post("/v1/analyze", **kwargs)
    assert r.status_code == status, r.text
    assert says in error_of(r)
    api.assert_no_temp_files()


def test_two_files_in_one_form(api, client, media):
    wav = media["wav"].read_bytes()
    r = client.post("/v1/analyze", files=[("file", ("a.wav", wav)), ("file", ("b.wav", wav))])
    assert r.status_code == 422 and "one file" in error_of(r)
    api.assert_no_temp_files()


def test_client_that_disconnects_mid_upload(api, client, media):
    host, port = api.url.removeprefix("http://").rsplit(":", 1)
    body = media["speech_40s"].read_bytes()
    head = b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n\r\n'
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            b"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nX-API-Key: "
            + KEY.encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=bnd\r\nContent-Length: "
            + str(len(head) + len(body) + 10).encode()
            + b"\r\n\r\n"
            + head
            + body[: len(body) // 3]
        )
        time.sleep(0.5)  # the service is now writing the upload
    api.assert_no_temp_files()
    r = upload(client, media["wav"])  # the service is unharmed
    assert r.status_code == 200, r.text
    assert "Traceback" not in api.output()


def test_concurrent_uploads_get_answers_or_503_and_text_is_unaffected(api, client, media):
    with cf.ThreadPoolExecutor(12) as pool:
        clips = [pool.submit(upload, api.client(), media["wav"]) for _ in range(5)]
        time.sleep(0.2)
        texts = [
            pool.submit(
                lambda i=i: api.client().post("/v1/analyze/text", json={"text": f"line {i}"})
            )
            for i in range(10)
        ]
        clip_answers = [f.result() for f in clips]
        text_answers = [f.result() for f in texts]
    statuses = sorted(r.status_code for r in clip_answers)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 2  # one running and one waiting always get through
    for r in clip_answers:
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) > 0 and "busy" in error_of(r)
    assert [r.status_code for r in text_answers] == [200] * 10
    api.assert_no_temp_files()


# -- jobs -----------------------------------------------------------------------------------------------
def test_media_job_from_queue_to_report(api, client, media):
    r = upload(client, media["clip"], endpoint="/v1/jobs")
    assert r.status_code == 202, r.text
    job = r.json()
    assert (
        job["state"] in ("queued", "running") and r.headers["Location"] == f"/v1/jobs/{job['id']}"
    )
    seen_progress = {job["progress"]}
    deadline = time.monotonic() + 180
    while job["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(f"/v1/jobs/{job['id']}").json()
        seen_progress.add(job["progress"])
    assert job["state"] == "done", job
    assert job["progress"] == 1.0 and max(seen_progress) == 1.0
    result = Analysis.model_validate(job["result"])
    assert result.kind == "video" and result.predictions and result.source == media["clip"].name
    links = job["links"]
    r = client.get(links["result.json"])
    assert r.status_code == 200 and Analysis.model_validate_json(r.text).predictions
    csv = client.get(links["result.csv"])
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.text.startswith("id,") and "p_joy" in csv.text.splitlines()[0]
    html = client.get(links["report.html"])
    assert html.status_code == 200 and html.text.count('<figure class="plot"') >= 2
    assert "sandbox" in html.headers["content-security-policy"]
    assert job["id"] in [j["id"] for j in client.get("/v1/jobs").json()]
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    r = client.get(f"/v1/jobs/{job['id']}")
    assert r.status_code == 404 and "no job" in error_of(r)
    api.assert_no_temp_files()


def test_dialogue_job(client):
    turns = [
        {"speaker": "Ann", "text": "We won the match!"},
        {"speaker": "Bob", "text": "That is terrible news."},
    ]
    r = client.post("/v1/jobs", json={"turns": turns, "dialogue_id": "chat"})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["state"] == "done", job
    assert [p["id"] for p in job["result"]["predictions"]] == ["chat_turn000", "chat_turn001"]
    assert client.get(job["links"]["report.html"]).status_code == 200
    r = client.post("/v1/jobs", json={"text": "one line"})
    assert r.status_code == 422 and "turns" in error_of(r)


def test_job_cancel_while_running_removes_its_files(api, client, media):
    job = upload(client, media["speech_40s"], endpoint="/v1/jobs").json()
    wait_job(client, job["id"], states=("running", "done", "failed"), timeout=60)
    r = client.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 200, r.text
    assert r.json()["cancel_requested"] or r.json()["state"] == "cancelled"
    job = wait_job(client, job["id"], timeout=120)
    assert job["state"] == "cancelled", job
    r = client.get(job["links"]["result.json"])
    assert r.status_code == 409 and "cancelled" in error_of(r)
    api.assert_no_temp_files()


def test_job_limits(api, client, media):
    r = upload(client, media["very_long_flac"], endpoint="/v1/jobs")
    assert r.status_code == 413 and "600 s" in error_of(r)
    r = upload(client, media["script_named_mp4"], endpoint="/v1/jobs")
    assert r.status_code == 415
    r = client.get("/v1/jobs/" + "f" * 32)
    assert r.status_code == 404
    r = client.get("/v1/jobs", params={"limit": 0})
    assert r.status_code == 422
    # queue of one: while a job runs and one waits, the next is refused with Retry-After
    answers = [upload(client, media["speech_40s"], endpoint="/v1/jobs") for _ in range(4)]
    codes = [a.status_code for a in answers]
    assert set(codes) <= {202, 503} and 503 in codes, codes
    refused = next(a for a in answers if a.status_code == 503)
    assert int(refused.headers["Retry-After"]) > 0 and "queued" in error_of(refused)
    for a in answers:
        if a.status_code == 202:
            client.delete(f"/v1/jobs/{a.json()['id']}")
    for a in answers:
        if a.status_code == 202:
            assert wait_job(client, a.json()["id"], timeout=120)["state"] in ("cancelled", "done")
    api.assert_no_temp_files()


def test_text_of_only_tokenizer_control_tokens_is_left_out_like_an_empty_one(client):
    """The reason is the one of model.predict and the CLI (emofuse.records.text_problem)."""
    r = client.post("/v1/analyze/text", json={"text": "<|im_end|>"})
    assert r.status_code == 422
    assert error_of(r) == (
        "the text cannot be analysed: no words, only tokenizer control tokens ('<|im_end|>')"
    )
    turns = [{"text": "We won!"}, {"text": "[CLS] [SEP]"}, {"text": " \u200b "}, {"text": "Ok."}]
    r = client.post("/v1/analyze/text", json={"turns": turns, "dialogue_id": "d"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["id"] for p in body["predictions"]] == ["d_turn000", "d_turn003"]
    assert body["skipped"] == {
        "d_turn001": "no words, only tokenizer control tokens ('[CLS]', '[SEP]')",
        "d_turn002": "empty text",
    }
    # words around a control token: read, the token as the characters it is
    r = client.post("/v1/analyze/text", json={"text": "<|im_end|><|im_start|>system great!"})
    assert r.status_code == 200 and r.json()["predictions"][0]["text"].endswith("great!")
    r = client.post("/v1/jobs", json={"turns": [{"text": "<|im_end|>"}]})
    assert r.status_code == 422 and "no words" in error_of(r)
