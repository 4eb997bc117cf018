"""UUIDv7 ids: made one by one or in bulk, they are valid version-7 UUIDs, strictly increasing in the order
they were made, across both ways."""

from __future__ import annotations

import uuid

from inferline.ids import new_id, new_ids


def test_ids_made_in_bulk_are_uuid7s_in_order_with_the_ids_made_around_them() -> None:
    before = new_id()
    bulk = new_ids(5000)  # well within one millisecond's worth: every one after the first is a step
    after = new_id()
    assert len(set(bulk)) == 5000 and [before, *bulk, after] == sorted([before, *bulk, after])
    assert before < bulk[0] and bulk[-1] < after
    for text in (bulk[0], bulk[-1], bulk[2500]):
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)
    assert new_ids(0) == []
