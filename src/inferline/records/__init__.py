"""The record stream: records sent over gRPC (`RecordStream.Upload`, `records.proto`) upserted into search
collections as they arrive, acknowledged in order once committed.

`stream.py` is the use case (a window of unacknowledged records, groups committed through the batches'
own bulk upsert, `batches/upsert.py`); `grpc.py` serves it (auth, limits, status codes); the CLI's
`inferline records push` is a client. Design and protocol: docs/batches.md, "gRPC record stream".
"""
