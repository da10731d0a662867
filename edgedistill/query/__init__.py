"""The query-only teacher: a model behind a command that may only be asked (protocol
``edgedistill.query/1``). `query_teacher` is edgedistill's half, `serve` the client's."""

from edgedistill.query.protocol import PROTOCOL, decode_payload, encode_frame, serve
from edgedistill.query.teacher import LEDGER, QueryResult, QueryTeacherConfig, input_keys, query_teacher

__all__ = [
    "LEDGER", "PROTOCOL", "QueryResult", "QueryTeacherConfig", "decode_payload", "encode_frame", "input_keys",
    "query_teacher", "serve",
]
