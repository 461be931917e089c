"""Status numbers of EAS, as enums: no status number appears as a literal elsewhere.

Sources: MS-ASCMD 2.2.2 (common status codes 101-177), 2.2.3.177.x (per-command
Status values), MS-ASPROV 2.2.2.54 (Provision/Policy/RemoteWipe status).
Values are sent as decimal text in STR_I (MS-ASDTYPE 2.6); ``str(int(s))`` does it.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "CommonStatus",
    "FolderStatus",
    "PingStatus",
    "PolicyStatus",
    "ProvisionStatus",
    "SettingsStatus",
    "SyncStatus",
    "WipeAckStatus",
]


class CommonStatus(IntEnum):
    """Common status codes valid in any command's top-level Status (MS-ASCMD 2.2.2)."""

    InvalidContent = 101
    InvalidWBXML = 102
    InvalidXML = 103
    InvalidDateTime = 104
    InvalidCombinationOfIDs = 105
    InvalidIDs = 106
    InvalidMIME = 107
    DeviceIdMissingOrInvalid = 108
    DeviceTypeMissingOrInvalid = 109
    ServerError = 110
    ServerErrorRetryLater = 111
    ActiveDirectoryAccessDenied = 112
    MailboxQuotaExceeded = 113
    MailboxServerOffline = 114
    SendQuotaExceeded = 115
    MessageRecipientUnresolved = 116
    MessageReplyNotAllowed = 117
    MessagePreviouslySent = 118
    MessageHasNoRecipient = 119
    MailSubmissionFailed = 120
    MessageReplyFailed = 121
    AttachmentIsTooLarge = 122
    UserHasNoMailbox = 123
    UserCannotBeAnonymous = 124
    UserPrincipalCouldNotBeFound = 125
    UserDisabledForSync = 126
    UserOnNewMailboxCannotSync = 127
    UserOnLegacyMailboxCannotSync = 128
    DeviceIsBlockedForThisUser = 129
    AccessDenied = 130
    AccountDisabled = 131
    SyncStateNotFound = 132
    SyncStateLocked = 133
    SyncStateCorrupt = 134
    SyncStateAlreadyExists = 135
    SyncStateVersionInvalid = 136
    CommandNotSupported = 137
    VersionNotSupported = 138
    DeviceNotFullyProvisionable = 139
    RemoteWipeRequested = 140
    LegacyDeviceOnStrictPolicy = 141
    DeviceNotProvisioned = 142
    PolicyRefresh = 143
    InvalidPolicyKey = 144
    ExternallyManagedDevicesNotAllowed = 145
    NoRecurrenceInCalendar = 146
    UnexpectedItemClass = 147
    RemoteServerHasNoSSL = 148
    InvalidStoredRequest = 149
    ItemNotFound = 150
    TooManyFolders = 151
    NoFoldersFound = 152
    ItemsLostAfterMove = 153
    FailureInMoveOperation = 154
    MoveCommandDisallowedForNonPersistentMoveAction = 155
    MoveCommandInvalidDestinationFolder = 156
    AvailabilityTooManyRecipients = 160
    AvailabilityDLLimitReached = 161
    AvailabilityTransientFailure = 162
    AvailabilityFailure = 163
    BodyPartPreferenceTypeNotSupported = 164
    DeviceInformationRequired = 165
    InvalidAccountId = 166
    AccountSendDisabled = 167
    IRM_FeatureDisabled = 168
    IRM_TransientError = 169
    IRM_PermanentError = 170
    IRM_InvalidTemplateID = 171
    IRM_OperationNotPermitted = 172
    NoPicture = 173
    PictureTooLarge = 174
    PictureLimitReached = 175
    BodyPart_ConversationTooLarge = 176
    MaximumDevicesReached = 177


class SyncStatus(IntEnum):
    """Sync/Status (MS-ASCMD 2.2.3.177.17)."""

    Success = 1
    InvalidSyncKey = 3
    ProtocolError = 4
    ServerError = 5
    ConversionError = 6
    Conflict = 7
    ObjectNotFound = 8
    CannotComplete = 9
    FolderHierarchyChanged = 12
    RequestIncomplete = 13
    InvalidWaitOrHeartbeat = 14
    TooManyCollections = 15
    Retry = 16


class PingStatus(IntEnum):
    """Ping/Status (MS-ASCMD 2.2.3.177.11)."""

    HeartbeatExpired = 1
    ChangesFound = 2
    MissingParameters = 3
    SyntaxError = 4
    HeartbeatOutOfRange = 5
    TooManyFolders = 6
    FolderSyncRequired = 7
    ServerError = 8


class FolderStatus(IntEnum):
    """FolderSync / FolderCreate / FolderUpdate / FolderDelete Status (177.3-177.6)."""

    Success = 1
    AlreadyExists = 2
    SpecialFolder = 3
    NotFound = 4
    ParentNotFound = 5
    ServerError = 6
    InvalidSyncKey = 9
    MalformedRequest = 10
    UnknownError = 11
    CodeUnknown = 12


class ProvisionStatus(IntEnum):
    """Provision/Status in responses (MS-ASPROV 2.2.2.54.2)."""

    Success = 1
    ProtocolError = 2
    ServerError = 3
    WipeFailed = 2  # alias: the answer to a failed wipe acknowledgement (3.2.5.1.2.2)


class PolicyStatus(IntEnum):
    """Policy/Status (MS-ASPROV 2.2.2.54.1): server values; the client's
    acknowledgement uses 1 applied, 2 partial, 3 not applied, 4 third party."""

    Success = 1
    NoPolicy = 2
    UnknownPolicyType = 3
    PolicyDataCorrupt = 4
    WrongPolicyKey = 5


class WipeAckStatus(IntEnum):
    """RemoteWipe/Status and AccountOnlyRemoteWipe/Status in requests (2.2.2.54.3)."""

    Succeeded = 1
    Failed = 2


class SettingsStatus(IntEnum):
    """Settings/Status (MS-ASCMD 2.2.3.177.15)."""

    Success = 1
    ProtocolError = 2
    AccessDenied = 3
    ServerUnavailable = 4
    InvalidArguments = 5
    ConflictingArguments = 6
    DeniedByPolicy = 7
