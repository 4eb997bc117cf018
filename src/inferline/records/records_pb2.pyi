from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Record(_message.Message):
    __slots__ = ("custom_id", "text", "metadata", "collection")
    CUSTOM_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    custom_id: str
    text: str
    metadata: _struct_pb2.Struct
    collection: str
    def __init__(self, custom_id: _Optional[str] = ..., text: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., collection: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq", "custom_id", "document_id", "error")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    seq: int
    custom_id: str
    document_id: str
    error: str
    def __init__(self, seq: _Optional[int] = ..., custom_id: _Optional[str] = ..., document_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...
