"""One JSON POST to an OpenAI-compatible server, its failures as one-line user errors; shared
by the clients of such servers (the planner, the frozen actor engine). ``OPENAI_API_KEY`` is
sent when set."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from telos.errors import UserError


def post_json(endpoint: str, body: dict, timeout: float, who: str) -> dict:
    """The server's JSON answer; ``who`` names the server in errors ("planner server")."""
    headers = {"Content-Type": "application/json"}
    if os.environ.get("OPENAI_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
    request = urllib.request.Request(endpoint, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        detail = e.read()[:200].decode(errors="replace").replace("\n", " ")
        raise UserError(f"{who} {endpoint} answered HTTP {e.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"cannot reach the {who} at {endpoint}: {reason}") from None
    except ValueError:
        raise UserError(f"{who} {endpoint} did not answer JSON") from None
