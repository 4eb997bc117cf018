"""`webhooks.verify`, as receivers run it: on anything a sender could put in the headers."""

from __future__ import annotations

import time

from inferline.jobs.webhooks import new_secret, sign, verify


def test_verify_answers_false_for_any_headers_a_sender_could_send() -> None:
    secret, body = new_secret(), b'{"type":"job.start"}'
    stamp = int(time.time())
    good = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, "msg_1", stamp, body),
    }
    assert verify(secret, good, body)
    bad_headers = [
        {},
        {"webhook-id": "msg_1", "webhook-timestamp": str(stamp)},
        good | {"webhook-timestamp": "soon"},
        good | {"webhook-timestamp": "\u0661\u0667" + "\u0660" * 8},  # digits, not ASCII ones
        good | {"webhook-timestamp": "9" * 40},
        good | {"webhook-signature": "v1,é" + good["webhook-signature"][4:]},
        good | {"webhook-id": "msg_é"},
        good | {"webhook-signature": "not a signature"},
        good | {"webhook-signature": ""},
    ]
    for headers in bad_headers:
        assert verify(secret, headers, body) is False, headers
