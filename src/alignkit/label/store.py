"""The project database: items, annotators and labels in one SQLite file (WAL mode).

Durability: every write is its own transaction, committed with ``synchronous=FULL`` before
the request that made it returns, so a label the browser saw acknowledged survives a
``kill -9`` of the server (and a power cut). Each request opens its own connection.

Tables: ``items`` (the rows imported from the project's data, never changed afterwards),
``annotators`` (name and the SHA-256 of their secret token: the token itself is not stored),
``labels`` (one row per annotator, task and item: ``open`` while shown, then ``done`` with
the value, or ``skipped``; ``flagged`` and ``note`` on either) and ``meta`` (the data file's
hash and the secret that signs CSRF tokens).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alignkit.errors import ConfigError
from alignkit.label.tasks import TASKS, Item

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, format TEXT NOT NULL, prompt TEXT NOT NULL,
    responses TEXT NOT NULL, row TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS annotators (name TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS labels (annotator TEXT NOT NULL, task TEXT NOT NULL, item_id INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'done', 'skipped')), value TEXT, flagged INTEGER NOT NULL DEFAULT 0,
    note TEXT NOT NULL DEFAULT '', updated REAL NOT NULL, PRIMARY KEY (annotator, task, item_id));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
ANNOTATOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
IMPORTED_PREFIX = "import:"  # labels that came with the data (qa-feedback's feedback); no token can log in


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class LabelStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file
            db.executescript(SCHEMA)
        finally:
            db.close()
        with self.connect() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (secrets.token_hex(32),))

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose block is one transaction: committed on exit, rolled back on error."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # 1. items -----------------------------------------------------------------------

    def item_count(self) -> int:
        with self.connect() as db:
            return db.execute("SELECT count(*) FROM items").fetchone()[0]

    def add_items(self, rows: list[tuple[str, str, list[str], dict]], data_sha256: str,
                  imported: list[tuple[int, str, str, dict]]) -> None:
        """Insert (format, prompt, responses, row) and labels that came with the data, in one transaction."""
        with self.connect() as db:
            db.execute("INSERT INTO meta VALUES ('data_sha256', ?)", (data_sha256,))
            db.executemany("INSERT INTO items (id, format, prompt, responses, row) VALUES (?, ?, ?, ?, ?)",
                           [(i, f, p, json.dumps(r), json.dumps(row)) for i, (f, p, r, row) in enumerate(rows, 1)])
            db.executemany("INSERT INTO labels VALUES (?, ?, ?, 'done', ?, 0, '', ?)",
                           [(who, task, item_id, json.dumps(v), time.time()) for item_id, who, task, v in imported])

    def data_sha256(self) -> str | None:
        with self.connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'data_sha256'").fetchone()
        return row[0] if row else None

    def items(self) -> dict[int, Item]:
        with self.connect() as db:
            rows = db.execute("SELECT id, prompt, responses, row, format FROM items ORDER BY id").fetchall()
        return {i: Item(i, p, json.loads(r), json.loads(row), f) for i, p, r, row, f in rows}

    def item(self, item_id: int) -> Item | None:
        with self.connect() as db:
            row = db.execute("SELECT id, prompt, responses, row, format FROM items WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else Item(row[0], row[1], json.loads(row[2]), json.loads(row[3]), row[4])

    # 2. annotators ------------------------------------------------------------------

    def add_annotator(self, name: str) -> str:
        """Register ``name`` and return their new secret token (a second call gives a new token)."""
        if not ANNOTATOR_NAME.match(name):
            raise ConfigError(f"annotator name {name!r}: use 1-40 letters, digits, '_', '.' or '-'")
        token = secrets.token_urlsafe(24)
        with self.connect() as db:
            db.execute("INSERT INTO annotators VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET token_sha256 = "
                       "excluded.token_sha256", (name, _sha256(token)))
        return token

    def annotator_for_token(self, token: str) -> str | None:
        if not token or len(token) > 200:
            return None
        with self.connect() as db:
            row = db.execute("SELECT name FROM annotators WHERE token_sha256 = ?", (_sha256(token),)).fetchone()
        return row[0] if row else None

    def annotators(self) -> list[str]:
        with self.connect() as db:
            return [r[0] for r in db.execute("SELECT name FROM annotators ORDER BY name")]

    def csrf_token(self, annotator: str) -> str:
        with self.connect() as db:
            secret = db.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()[0]
        return hmac.new(secret.encode(), f"csrf:{annotator}".encode(), hashlib.sha256).hexdigest()

    # 3. assignment and labels -------------------------------------------------------

    def next_item(self, annotator: str, task: str, per_item: int) -> int | None:
        """The item ``annotator`` should label next for ``task``: the one already open for them, else
        the first they have not seen that fewer than ``per_item`` annotators hold (items others started
        come first, so items fill up); it is then held open for them. ``None`` when nothing is left."""
        need = TASKS[task].min_responses
        with self.connect() as db:
            row = db.execute("SELECT item_id FROM labels WHERE annotator = ? AND task = ? AND state = 'open'",
                             (annotator, task)).fetchone()
            if row:
                return row[0]
            row = db.execute(
                """SELECT i.id, (SELECT count(*) FROM labels l WHERE l.item_id = i.id AND l.task = :task
                                 AND l.state != 'skipped' AND l.annotator NOT LIKE 'import:%') AS held
                   FROM items i WHERE json_array_length(i.responses) >= :need AND NOT EXISTS (
                       SELECT 1 FROM labels l WHERE l.item_id = i.id AND l.task = :task AND l.annotator = :who)
                   AND held < :per_item ORDER BY held DESC, i.id LIMIT 1""",
                {"task": task, "need": need, "who": annotator, "per_item": per_item}).fetchone()
            if row is None:
                return None
            db.execute("INSERT INTO labels (annotator, task, item_id, state, updated) VALUES (?, ?, ?, 'open', ?)",
                       (annotator, task, row[0], time.time()))
            return row[0]

    def finish(self, annotator: str, task: str, item_id: int, value: dict | None, flagged: bool, note: str) -> bool:
        """Store a label (``value``) or a skip (``None``) for an item open for ``annotator``; False if not open."""
        state = "skipped" if value is None else "done"
        with self.connect() as db:
            cur = db.execute(
                "UPDATE labels SET state = ?, value = ?, flagged = ?, note = ?, updated = ? "
                "WHERE annotator = ? AND task = ? AND item_id = ? AND state = 'open'",
                (state, None if value is None else json.dumps(value), int(flagged), note[:2000], time.time(),
                 annotator, task, item_id))
            return cur.rowcount == 1

    def progress(self, annotator: str, task: str, per_item: int) -> dict[str, int]:
        need = TASKS[task].min_responses
        with self.connect() as db:
            counts = dict(db.execute("SELECT state, count(*) FROM labels WHERE annotator = ? AND task = ? "
                                     "GROUP BY state", (annotator, task)).fetchall())
            left = db.execute(
                """SELECT count(*) FROM items i WHERE json_array_length(i.responses) >= :need AND NOT EXISTS (
                       SELECT 1 FROM labels l WHERE l.item_id = i.id AND l.task = :task AND l.annotator = :who)
                   AND (SELECT count(*) FROM labels l WHERE l.item_id = i.id AND l.task = :task
                        AND l.state != 'skipped' AND l.annotator NOT LIKE 'import:%') < :per_item""",
                {"task": task, "need": need, "who": annotator, "per_item": per_item}).fetchone()[0]
        return {"done": counts.get("done", 0), "skipped": counts.get("skipped", 0),
                "left": left + counts.get("open", 0)}

    def labels(self, task: str) -> list[tuple[str, int, dict]]:
        """Every finished label of ``task``: (annotator, item id, value), by item then annotator."""
        with self.connect() as db:
            rows = db.execute("SELECT annotator, item_id, value FROM labels WHERE task = ? AND state = 'done' "
                              "ORDER BY item_id, annotator", (task,)).fetchall()
        return [(a, i, json.loads(v)) for a, i, v in rows]

    def flagged(self) -> list[tuple[str, str, int, str, str]]:
        """(annotator, task, item id, state, note) of every flagged label or skip."""
        with self.connect() as db:
            return db.execute("SELECT annotator, task, item_id, state, note FROM labels WHERE flagged = 1 "
                              "ORDER BY item_id, task, annotator").fetchall()
