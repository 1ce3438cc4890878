"""Helpers for the labelling tests: a project over a small generated-samples file."""

import json

import yaml

XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def sample_rows(n: int = 3, k: int = 4) -> list[dict]:
    """Rows as `alignkit generate` writes them without rewards: {prompt, responses}."""
    return [{"prompt": f"Review {i}: the movie was", "responses": [f"answer {j} to {i}. It was fine." for j in range(k)]}
            for i in range(n)]


def write_project(tmp_path, rows=None, **config) -> "object":
    data = tmp_path / "samples.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in (rows if rows is not None else sample_rows())))
    path = tmp_path / "project.yaml"
    path.write_text(yaml.safe_dump({"data": "samples.jsonl", "tasks": ["rank", "choose", "rate", "spans"], **config}))
    return path
