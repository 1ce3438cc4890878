"""The web app's guarantees, request by request: 401 without a token, CSRF on every write, model text
shown as text, no request value reaching the file system, annotators kept apart."""

import json

import pytest
from label_helpers import XSS, sample_rows

pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from alignkit.label.app import create_app  # noqa: E402


@pytest.fixture
def app(project):
    rows = sample_rows()
    rows[0]["prompt"] = "Prompt " + XSS
    rows[0]["responses"][0] = "Response " + XSS
    p, store = project(rows)
    tokens = {who: store.add_annotator(who) for who in ("ann", "bob")}
    return create_app(p, store), store, tokens


def signed_in(app, token):
    client = TestClient(app, base_url="http://127.0.0.1:8765")
    assert client.get(f"/login/{token}", follow_redirects=False).status_code == 303
    return client


def post(client, csrf, payload, **headers):
    return client.post("/api/label", content=json.dumps(payload),
                       headers={"content-type": "application/json", "x-csrf-token": csrf, **headers})


def csrf_of(html):
    data = html.split('id="item-data">', 1)[1].split("</script>", 1)[0]
    return json.loads(data)["csrf"], json.loads(data)["item"]


@pytest.mark.parametrize("method, path", [
    ("GET", "/"), ("GET", "/task/rank"), ("POST", "/api/label"), ("GET", "/login/not-a-token"), ("GET", "/login/"),
])
def test_no_valid_token_is_401(app, method, path):
    expected = 404 if path == "/login/" else 401  # "/login/" with no token is no route at all
    client = TestClient(app[0])
    assert client.request(method, path).status_code == expected
    client.cookies.set("alignkit_label_8765", "forged")
    assert client.request(method, path, headers={"authorization": "Bearer forged"}).status_code == expected


def test_login_sets_a_strict_httponly_cookie_and_bearer_works(app):
    web, store, tokens = app
    response = TestClient(web).get(f"/login/{tokens['ann']}", follow_redirects=False)
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    bare = TestClient(web)
    assert bare.get("/", headers={"authorization": f"Bearer {tokens['bob']}"}).status_code == 200


def test_state_changing_requests_need_the_csrf_token(app):
    web, store, tokens = app
    client = signed_in(web, tokens["ann"])
    csrf, item = csrf_of(client.get("/task/choose").text)
    good = {"task": "choose", "item": item, "value": {"choice": "A"}}
    assert post(client, "", good).status_code == 403
    assert post(client, "0" * 64, good).status_code == 403
    assert post(client, csrf_of(signed_in(web, tokens["bob"]).get("/task/choose").text)[0], good).status_code == 403
    form = client.post("/api/label", data={"task": "choose"}, headers={"x-csrf-token": csrf})
    assert form.status_code == 415  # a form post (what a cross-site page can send) is refused
    assert store.labels("choose") == []
    assert post(client, csrf, good).json() == {"saved": True, "next": "/task/choose"}
    assert [(a, i) for a, i, _ in store.labels("choose")] == [("ann", item)]


def test_model_text_is_shown_as_text(app):
    web, store, tokens = app
    client = signed_in(web, tokens["ann"])
    for task in ("rank", "choose", "rate", "spans"):
        response = client.get(f"/task/{task}")
        html = response.text
        assert "<script>window.__pwned" not in html and "<img src=x" not in html
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html  # escaped, visible as text
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert html.count("<script") == 2  # the JSON data block and /static/label.js, nothing else


def test_bad_labels_are_refused_with_a_reason(app):
    web, store, tokens = app
    client = signed_in(web, tokens["ann"])
    csrf, item = csrf_of(client.get("/task/rank").text)
    for value, reason in [({"ranks": [1, 2, 3]}, "ranks must be a list of 4"), ({"ranks": [0, 1, 2, 3]}, "1-4"),
                          ({"ranks": "1234"}, "ranks must be")]:
        response = post(client, csrf, {"task": "rank", "item": item, "value": value})
        assert response.status_code == 400 and reason in response.json()["error"]
    assert post(client, csrf, {"task": "nope", "item": item, "value": {}}).status_code == 400
    assert post(client, csrf, {"task": "rank", "item": item + 1, "value": {"ranks": [1, 1, 1, 1]}}).status_code == 409
    csrf, item = csrf_of(client.get("/task/spans").text)
    span = {"errors": [{"error type": "Made-up", "start": 0, "end": 3}]}
    assert "unknown error type" in post(client, csrf, {"task": "spans", "item": item, "value": span}).json()["error"]
    span = {"errors": [{"error type": "Irrelevant", "start": 0, "end": 10_000}]}
    assert post(client, csrf, {"task": "spans", "item": item, "value": span}).status_code == 400


def test_annotators_never_see_each_others_labels(app):
    web, store, tokens = app
    ann, bob = signed_in(web, tokens["ann"]), signed_in(web, tokens["bob"])
    csrf, item = csrf_of(ann.get("/task/rate").text)
    secret_note = "ann-private-note-7731"
    assert post(ann, csrf, {"task": "rate", "item": item, "note": secret_note,
                            "value": {"ratings": [7, 6, 5, 4], "flags": [[], ["Hallucination"], [], []]}}).status_code == 200
    page = bob.get("/task/rate").text
    assert csrf_of(page)[1] == item  # bob gets the same item ...
    assert secret_note not in page and '"ratings"' not in page  # ... without ann's label
    assert secret_note not in bob.get("/").text
    # bob cannot write into ann's label either: only his own open item is writable
    bob_csrf = csrf_of(page)[0]
    assert post(bob, bob_csrf, {"task": "rate", "item": item, "value": {"ratings": [1, 1, 1, 1]}}).status_code == 200
    assert {a: v["ratings"] for a, _, v in store.labels("rate")} == {"ann": [7, 6, 5, 4], "bob": [1, 1, 1, 1]}


@pytest.mark.parametrize("path", [
    "/static/../../../../etc/passwd", "/static/..%2f..%2f..%2fetc%2fpasswd", "/static/%2e%2e/app.py",
    "/static/templates/base.html", "/static/label.js/..", "/task/..%2fbase", "/task/../static/label.js",
    "/task/%2e%2e%2ftemplates%2fbase",
])
def test_no_request_path_reaches_the_file_system(app, path):
    web, store, tokens = app
    client = signed_in(web, tokens["ann"])
    response = client.get(path)
    assert response.status_code == 404 or "root:" not in response.text and "{% block" not in response.text
    assert "root:x:" not in response.text and "import" not in response.text[:200]


def test_requests_open_no_file(app, monkeypatch):
    """Templates and static files are read when the app is made; serving a request (any path, the
    traversal attempts above included) then opens no file from Python at all (SQLite opens its own)."""
    web, store, tokens = app
    client = signed_in(web, tokens["ann"])
    opened = []

    def refuse(*args, **kwargs):
        opened.append(args[0] if args else kwargs)
        raise AssertionError(f"a request opened a file: {args[:1]}")

    monkeypatch.setattr("builtins.open", refuse)
    monkeypatch.setattr("os.open", refuse)
    monkeypatch.setattr("io.open", refuse)
    for path in ("/", "/task/rank", "/task/spans", "/static/label.js", "/static/../../etc/passwd",
                 "/static/..%2f..%2fapp.py", "/task/..%2f..%2fapp"):
        assert client.get(path).status_code in (200, 404)
    assert opened == []


def test_static_files_and_home_page(app):
    web, store, tokens = app
    client = signed_in(web, tokens["ann"])
    assert client.get("/static/label.js").headers["content-type"].startswith("text/javascript")
    home = client.get("/").text
    assert "Rank the responses" in home and "ann" in home
