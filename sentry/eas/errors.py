"""The exception tree of the sans-IO protocol core.

Every error raised by ``sentry.eas`` for bad input is one of these, and each class
says what it means on the wire: the HTTP status to answer with and, where a
command-level answer makes sense, the EAS status number (MS-ASCMD 2.2.2).
Constructors only store fields; nothing here logs.

    EasError
    ├── WbxmlError            malformed or over-limit WBXML body  (400 / 102 InvalidWBXML)
    ├── XmlFormError          malformed XML text form (tools only; 400 / 103 InvalidXML)
    └── RequestError          malformed request line/query/headers (400)
        ├── QueryError            query string unparseable, base64 blob truncated (400 / 101)
        ├── CommandError          Cmd missing or unknown                          (400 / 137)
        ├── DeviceIdError         DeviceId missing or invalid                     (400 / 108)
        ├── DeviceTypeError       DeviceType missing or invalid                   (400 / 109)
        ├── VersionError          MS-ASProtocolVersion not one EAS defines        (400 / 138)
        ├── UserError             no user in Authorization nor in the query       (400 / 124)
        ├── MethodError           not OPTIONS or POST                             (405)
        └── BodyError             body not what the command needs                 (400 / 101/103)
"""

from __future__ import annotations

from .status import CommonStatus

__all__ = [
    "BodyError",
    "CommandError",
    "DeviceIdError",
    "DeviceTypeError",
    "EasError",
    "MethodError",
    "QueryError",
    "RequestError",
    "UserError",
    "VersionError",
    "WbxmlError",
    "XmlFormError",
]


class EasError(Exception):
    """Base class: bad input seen by the protocol core.

    ``http_status`` is the HTTP answer the gateway gives; ``eas_status`` the
    common status code that best describes the problem (for logs and for a
    command-level answer where one is sent).
    """

    http_status: int = 400
    eas_status: CommonStatus | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WbxmlError(EasError):
    """A WBXML body could not be decoded (or encoded): truncated, unknown
    token, invalid UTF-8, or over one of the decoder's limits.

    ``offset`` is the byte offset where decoding stopped, when known.
    """

    eas_status = CommonStatus.InvalidWBXML

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (at byte {offset})")
        self.offset = offset


class XmlFormError(EasError):
    """The XML text form of a WBXML tree is malformed or names an unknown tag."""

    eas_status = CommonStatus.InvalidXML


class RequestError(EasError):
    """The HTTP request (method, query, headers) is not a valid EAS request."""


class QueryError(RequestError):
    eas_status = CommonStatus.InvalidContent


class CommandError(RequestError):
    eas_status = CommonStatus.CommandNotSupported


class DeviceIdError(RequestError):
    eas_status = CommonStatus.DeviceIdMissingOrInvalid


class DeviceTypeError(RequestError):
    eas_status = CommonStatus.DeviceTypeMissingOrInvalid


class VersionError(RequestError):
    eas_status = CommonStatus.VersionNotSupported


class UserError(RequestError):
    """A POST names no user: no usable ``Authorization: Basic`` and no query User."""

    eas_status = CommonStatus.UserCannotBeAnonymous


class MethodError(RequestError):
    http_status = 405


class BodyError(EasError):
    """A decoded body lacks what the command requires (e.g. a Provision without
    Policies)."""

    eas_status = CommonStatus.InvalidXML
