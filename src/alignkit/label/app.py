"""The labelling web app (Starlette + Jinja2 with autoescaping), one instance per project.

Security model (each point has a test in tests/label/test_app.py):

- Authentication: an annotator opens ``/login/TOKEN`` (the URL ``alignkit label add-annotator``
  prints); the token goes into an HttpOnly, SameSite=Strict cookie. Every other request without
  a valid token (cookie or ``Authorization: Bearer``) gets 401.
- CSRF: the one state-changing request, ``POST /api/label``, needs the ``X-CSRF-Token`` header
  (an HMAC of the annotator under the project's secret, put in the page) and a JSON body.
- Model text is data: Jinja2 escapes it, the page scripts read it from a JSON block and insert
  it as text nodes, and the Content-Security-Policy allows no inline or foreign script.
- Files: templates and static files are read once from the package at start-up; no request
  value is ever joined to a path.
- Isolation: an annotator's page and API see their own labels only.
"""

from __future__ import annotations

import hmac
import json
from importlib import resources

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from alignkit.label.project import Project
from alignkit.label.store import LabelStore
from alignkit.label.tasks import TASKS, LabelError

STATIC_TYPES = {"label.js": "text/javascript; charset=utf-8", "label.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_BODY = 1 << 20  # bytes of one submitted label


class Unauthorized(Exception):
    pass


def create_app(project: Project, store: LabelStore) -> Starlette:
    cfg = project.config
    cookie = f"alignkit_label_{cfg.port}"
    env = Environment(loader=PackageLoader("alignkit.label", "templates"), autoescape=select_autoescape(default=True),
                      auto_reload=False)
    templates = {name: env.get_template(name) for name in env.list_templates()}  # read once, here
    static = {name: (resources.files("alignkit.label") / "static" / name).read_bytes() for name in STATIC_TYPES}
    tasks = [TASKS[name] for name in cfg.tasks]

    def page(name: str, status: int = 200, **context) -> HTMLResponse:
        return HTMLResponse(templates[name].render(**context), status_code=status, headers=SECURITY_HEADERS)

    def annotator_of(request: Request) -> str:
        token = request.cookies.get(cookie, "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        name = store.annotator_for_token(token)
        if name is None:
            raise Unauthorized
        return name

    def unauthorized(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "not signed in: open your personal link again"}, 401, SECURITY_HEADERS)
        return page("message.html", 401, title="Not signed in",
                    message="Open the personal link you were given (alignkit label add-annotator prints it).")

    def login(request: Request) -> Response:
        token = request.path_params["token"]
        if store.annotator_for_token(token) is None:
            raise Unauthorized
        response = RedirectResponse("/", status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(cookie, token, httponly=True, samesite="strict", max_age=30 * 24 * 3600)
        return response

    def home(request: Request) -> Response:
        who = annotator_of(request)
        rows = [(t, store.progress(who, t.name, cfg.annotators_per_item)) for t in tasks]
        return page("home.html", annotator=who, rows=rows)

    def task_page(request: Request) -> Response:
        who = annotator_of(request)
        task = TASKS.get(request.path_params["task"])
        if task is None or task.name not in cfg.tasks:
            return page("message.html", 404, title="No such task", message="This project has no such task.")
        progress = store.progress(who, task.name, cfg.annotators_per_item)
        item_id = store.next_item(who, task.name, cfg.annotators_per_item)
        common = {"annotator": who, "task": task, "tasks": tasks, "progress": progress}
        if item_id is None:
            return page("done.html", **common)
        item = store.item(item_id)
        data = {"task": task.name, "item": item.id, "csrf": store.csrf_token(who), "k": len(item.responses),
                **task.page_data(item, cfg)}
        return page(f"{task.name}.html", item=item, shown=task.shown(item, cfg), data=data, cfg=cfg, **common)

    async def submit(request: Request) -> Response:
        who = annotator_of(request)
        expected = store.csrf_token(who)
        if not hmac.compare_digest(request.headers.get("x-csrf-token", ""), expected):
            return JSONResponse({"error": "missing or wrong CSRF token: reload the page"}, 403, SECURITY_HEADERS)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "send JSON"}, 415, SECURITY_HEADERS)
        body = await request.body()
        try:
            if len(body) > MAX_BODY:
                raise LabelError("label too large")
            sent = json.loads(body)
            if not isinstance(sent, dict):
                raise LabelError("send a JSON object")
            task = TASKS.get(sent.get("task"))
            if task is None or task.name not in cfg.tasks:
                raise LabelError("unknown task")
            item_id = sent.get("item")
            item = store.item(item_id) if isinstance(item_id, int) and not isinstance(item_id, bool) else None
            if item is None:
                raise LabelError("unknown item")
            value = None if sent.get("skip") is True else task.validate(sent.get("value"), item, cfg)
        except (LabelError, json.JSONDecodeError) as err:
            return JSONResponse({"error": str(err)}, 400, SECURITY_HEADERS)
        note = sent.get("note") if isinstance(sent.get("note"), str) else ""
        if not store.finish(who, task.name, item.id, value, sent.get("flagged") is True, note):
            return JSONResponse({"error": "this item is not open for you (already saved?)"}, 409, SECURITY_HEADERS)
        return JSONResponse({"saved": True, "next": f"/task/{task.name}"}, headers=SECURITY_HEADERS)

    def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static:
            return Response("not found", 404, headers=SECURITY_HEADERS)
        return Response(static[name], media_type=STATIC_TYPES[name], headers=SECURITY_HEADERS)

    routes = [
        Route("/login/{token}", login),
        Route("/", home),
        Route("/task/{task}", task_page),
        Route("/api/label", submit, methods=["POST"]),
        Route("/static/{name}", static_file),
    ]
    return Starlette(routes=routes, exception_handlers={Unauthorized: unauthorized})
