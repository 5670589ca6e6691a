"""bot.github.webhooks.read_envelope: ingest's JSON check and the three fields it stores with a delivery.

simdjson does the work; orjson (what the workers parse with) is the reference: ingest must accept
exactly the bodies a worker can read, and read the same fields from them.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from bot.github.webhooks import Envelope, read_envelope
from bot.kernel.errors import PayloadError

WEBHOOKS = Path(__file__).resolve().parents[1].parent / "shared" / "github" / "webhooks"
EXAMPLES = sorted(WEBHOOKS.rglob("*.json"))


def reference(data: dict[str, Any]) -> Envelope:
    """The fields, read the obvious way from the fully parsed payload."""
    installation = data.get("installation")
    repository = data.get("repository")
    installation_id = installation.get("id") if isinstance(installation, dict) else None
    repo = repository.get("full_name") if isinstance(repository, dict) else None
    action = data.get("action")
    return Envelope(
        action=action if isinstance(action, str) else None,
        installation_id=installation_id if type(installation_id) is int else None,
        repo=repo if isinstance(repo, str) else None,
    )


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 20


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_real_example_reads_as_the_full_parse_does(path: Path) -> None:
    body = path.read_bytes()
    assert read_envelope(body) == reference(orjson.loads(body))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"action": "opened", "installation": {"id": 7}, "repository": {"full_name": "o/r"}}',
            Envelope("opened", 7, "o/r"),
        ),
        (b"{}", Envelope(None, None, None)),
        (b'  {"action": null}\n', Envelope(None, None, None)),
        # Wrong types are dropped, not refused: the worker's models decide what they mean.
        (
            b'{"action": 1, "installation": {"id": "7"}, "repository": ["o/r"]}',
            Envelope(None, None, None),
        ),
        (b'{"installation": {"id": true}}', Envelope(None, None, None)),
        (b'{"installation": 7, "repository": "o/r"}', Envelope(None, None, None)),
        # simdjson refuses integers beyond 64 bits; JSON allows them, and so does orjson.
        (
            b'{"action": "created", "n": 123456789012345678901234567890, "installation": {"id": 3}}',
            Envelope("created", 3, None),
        ),
        (b'{"action": "caf\xc3\xa9 \\u00e9\\ud83d\\ude00"}', Envelope("café é😀", None, None)),
    ],
    ids=["all", "empty", "null", "wrong-types", "bool-id", "scalars", "bigint", "unicode"],
)
def test_fields(body: bytes, expected: Envelope) -> None:
    assert read_envelope(body) == expected


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b'{"a": 1,}', "not JSON"),
        (b'{"a": 1} {"b": 2}', "not JSON"),
        (b'{"a": "\xff"}', "not JSON"),
        (b'{"a": "\\ud800"}', "not JSON"),
        (b'{"a": NaN}', "not JSON"),
        (b'\xef\xbb\xbf{"a": 1}', "byte order mark"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"null", "not a JSON object"),
    ],
    ids=[
        "empty",
        "syntax",
        "trailing-comma",
        "two-documents",
        "invalid-utf8",
        "lone-surrogate",
        "nan",
        "bom",
        "array",
        "string",
        "null",
    ],
)
def test_refused(body: bytes, says: str) -> None:
    with pytest.raises(PayloadError, match=says):
        read_envelope(body)


def test_accepts_exactly_what_orjson_accepts_on_damaged_real_payloads() -> None:
    """Differential check: real payloads with a few random bytes changed, inserted or removed."""
    rnd = random.Random(2026)
    bodies = [path.read_bytes() for path in EXAMPLES]
    alphabet = b'{}[]",:\\ \t\n0123456789eE+-.truefalsnu\x00\xff\xc3\xa9\xed\xa0\x80'
    accepted = refused = 0
    for _ in range(3000):
        body = bytearray(rnd.choice(bodies))
        for _ in range(rnd.randint(1, 3)):
            at = rnd.randrange(len(body))
            match rnd.randrange(3):
                case 0:
                    body[at] = rnd.choice(alphabet)
                case 1:
                    del body[at]
                case _:
                    body.insert(at, rnd.choice(alphabet))
        try:
            data = orjson.loads(bytes(body))
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            assert read_envelope(bytes(body)) == reference(data), bytes(body)
            accepted += 1
        else:
            with pytest.raises(PayloadError):
                read_envelope(bytes(body))
            refused += 1
    # Both outcomes must be well represented, or the check proves little.
    assert accepted > 300, (accepted, refused)
    assert refused > 300, (accepted, refused)
