//! The errors a procedure replies with.
//!
//! Every refusal has a stable numeric code (the Tarantool error code the client
//! sees) and a message that starts with the argument it is about. The table in
//! README.md lists them; [`Error::code`] is the single source of the numbers.

use std::fmt;

use tarantool::error::{BoxError, IntoBoxError};

/// Stable error codes, as documented in README.md.
pub mod code {
    /// Wrong number of arguments.
    pub const BAD_ARITY: u32 = 1001;
    /// An argument or option of the wrong msgpack type, or nil where a value is needed.
    pub const BAD_TYPE: u32 = 1002;
    /// A string that is not a canonical uuid, or the nil uuid; a `dialog_id`
    /// string that is neither a canonical uuid nor a valid dialog key.
    pub const BAD_UUID: u32 = 1003;
    /// Text empty, too long or not UTF-8.
    pub const BAD_TEXT: u32 = 1004;
    /// An unknown, repeated or out-of-range option.
    pub const BAD_OPTION: u32 = 1005;
    /// A write on a read-only instance.
    pub const READ_ONLY: u32 = 1006;
    /// A `request_id` reused for a different message.
    pub const REQUEST_CONFLICT: u32 = 1007;
    /// A bug caught at the procedure boundary.
    pub const INTERNAL: u32 = 1008;
    /// `mark_read`: `up_to_id` is not a message of this user in this dialog.
    pub const NOT_IN_DIALOG: u32 = 1013;
    /// `mark_read` through a router: the dialog kept changing while the router
    /// counted; the call changed nothing and may be repeated as it is.
    pub const RETRY: u32 = 1014;
}

/// Tarantool's own code for a write refused by a read-only instance (ER_READONLY).
pub const ER_READONLY: u32 = 7;
/// Tarantool's code for a duplicate key in a unique index (ER_TUPLE_FOUND).
pub const ER_TUPLE_FOUND: u32 = 3;
/// Tarantool's code for a transaction aborted by a concurrent one under memtx MVCC.
pub const ER_TRANSACTION_CONFLICT: u32 = 97;

/// Why a call was refused. The messages are the documented ones (README
/// "Errors"), word for word.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The call had `got` arguments; `expected` describes the signature.
    #[error("{proc}: expected {expected}, got {got}")]
    Arity {
        proc: &'static str,
        expected: &'static str,
        got: u32,
    },
    /// `arg` has msgpack type `got`; `expected` says what fits.
    #[error("{arg}: expected {expected}, got {got}")]
    Type {
        arg: Arg,
        expected: &'static str,
        got: &'static str,
    },
    /// `arg` is a string but not a canonical uuid; `value` is a printable excerpt.
    #[error("{arg}: malformed uuid {value}")]
    Uuid { arg: Arg, value: String },
    /// `arg` is the nil uuid, which is never a valid id.
    #[error("{arg}: the nil uuid is not a valid id")]
    NilUuid { arg: Arg },
    /// A `dialog_id` key of `bytes` bytes, outside `1..=MAX_KEY_BYTES`.
    #[error("dialog_id: a dialog key must be 1 to {max} bytes, got {bytes}", max = crate::ids::MAX_KEY_BYTES)]
    KeyLength { bytes: usize },
    /// A `dialog_id` key that is not valid UTF-8.
    #[error("dialog_id: a dialog key must be valid UTF-8")]
    KeyEncoding,
    /// The text has `chars` characters, outside `1..=MAX_TEXT_CHARS`.
    #[error("text: must be 1 to {max} characters, got {chars}", max = crate::MAX_TEXT_CHARS)]
    TextLength { chars: usize },
    /// The text is not valid UTF-8.
    #[error("text: not valid UTF-8")]
    TextEncoding,
    /// An option name this procedure does not know.
    #[error("opts: unknown option {name}")]
    UnknownOption { name: String },
    /// An option given more than once in one map.
    #[error("opts: option {name:?} given twice")]
    RepeatedOption { name: &'static str },
    /// An option key that is not a string.
    #[error("opts: option names must be strings, got {got}")]
    OptionKey { got: &'static str },
    /// An integer option outside its range.
    #[error("{arg}: must be {min} to {max}, got {got}")]
    OptionRange {
        arg: Arg,
        min: u64,
        max: u64,
        got: String,
    },
    /// A write (`proc`) on a read-only instance.
    #[error("{proc}: this instance is read-only; send writes to the master")]
    ReadOnly { proc: &'static str },
    /// `opts.request_id` already stored another message.
    #[error("opts.request_id: already used for message {message_id} with other content")]
    RequestConflict { message_id: uuid::Uuid },
    /// `mark_read`'s `up_to_id` names no message that this user sent or received
    /// in this dialog.
    #[error("up_to_id: not a message of this user in this dialog")]
    NotInDialog,
    /// `mark_read` through a router gave up after the dialog changed under every
    /// round of its count (docs/inbox.md, "Through a router").
    #[error("mark_read: the dialog kept changing; retry")]
    Retry,
    /// A panic or broken invariant inside `proc`.
    #[error("{proc}: internal error: {what}")]
    Internal { proc: &'static str, what: String },
    /// An error raised by Tarantool itself, passed through unchanged.
    #[error("{0}")]
    Box(Box<BoxError>),
}

/// The argument (or option) an error is about, as the client named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    DialogId,
    UserFrom,
    UserTo,
    Text,
    Opts,
    Limit,
    After,
    Before,
    Reverse,
    RequestId,
    UserId,
    UpToId,
}

impl Arg {
    /// The name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Arg::DialogId => "dialog_id",
            Arg::UserFrom => "user_from",
            Arg::UserTo => "user_to",
            Arg::Text => "text",
            Arg::Opts => "opts",
            Arg::Limit => "opts.limit",
            Arg::After => "opts.after",
            Arg::Before => "opts.before",
            Arg::Reverse => "opts.reverse",
            Arg::RequestId => "opts.request_id",
            Arg::UserId => "user_id",
            Arg::UpToId => "up_to_id",
        }
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Error {
    /// The stable code of this error (Tarantool's own code for [`Error::Box`]).
    pub fn code(&self) -> u32 {
        match self {
            Error::Arity { .. } => code::BAD_ARITY,
            Error::Type { .. } => code::BAD_TYPE,
            Error::Uuid { .. }
            | Error::NilUuid { .. }
            | Error::KeyLength { .. }
            | Error::KeyEncoding => code::BAD_UUID,
            Error::TextLength { .. } | Error::TextEncoding => code::BAD_TEXT,
            Error::UnknownOption { .. }
            | Error::RepeatedOption { .. }
            | Error::OptionKey { .. }
            | Error::OptionRange { .. } => code::BAD_OPTION,
            Error::ReadOnly { .. } => code::READ_ONLY,
            Error::NotInDialog => code::NOT_IN_DIALOG,
            Error::Retry => code::RETRY,
            Error::RequestConflict { .. } => code::REQUEST_CONFLICT,
            Error::Internal { .. } => code::INTERNAL,
            Error::Box(e) => e.error_code(),
        }
    }

    /// Makes this error the fiber's last error, which Tarantool sends to the client
    /// when the procedure returns -1.
    #[track_caller]
    pub fn set_last(self) {
        self.set_last_error();
    }

    /// This error as the write `proc` gives it: a read-only refusal names the
    /// procedure the client called ([`Error::last_box_error`] names `new_dialog`,
    /// the first write).
    pub fn in_write(self, proc: &'static str) -> Error {
        match self {
            Error::ReadOnly { .. } => Error::ReadOnly { proc },
            other => other,
        }
    }

    /// The last error Tarantool raised, translated where the client deserves a
    /// clearer word (a write on a replica: named as `new_dialog`'s, see
    /// [`Error::in_write`] for the other writes).
    pub fn last_box_error() -> Error {
        match BoxError::maybe_last() {
            Err(e) if e.error_code() == ER_READONLY => Error::ReadOnly { proc: "new_dialog" },
            Err(e) => Error::Box(Box::new(e)),
            // A failed call that set no error: Tarantool's bug, still a refusal.
            Ok(()) => Error::Box(Box::new(BoxError::new(
                code::INTERNAL,
                "a Tarantool call failed and set no error",
            ))),
        }
    }
}

/// The crate's conversion into a box error: our stable code and message, or
/// Tarantool's own error passed through as it was raised.
impl IntoBoxError for Error {
    #[track_caller]
    fn into_box_error(self) -> BoxError {
        match self {
            Error::Box(e) => *e,
            other => BoxError::new(other.code(), other.to_string()),
        }
    }

    fn error_code(&self) -> u32 {
        self.code()
    }
}

/// What a procedure step returns.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages README "Errors" documents, word for word.
    #[test]
    fn messages_are_the_documented_ones() {
        let id = uuid::Uuid::from_bytes([1; 16]);
        let cases = [
            (
                Error::Arity {
                    proc: "get_dialog",
                    expected: "1 or 2 arguments (dialog_id [, opts])",
                    got: 3,
                },
                "get_dialog: expected 1 or 2 arguments (dialog_id [, opts]), got 3",
            ),
            (
                Error::Type {
                    arg: Arg::UserTo,
                    expected: "a uuid (string or msgpack uuid)",
                    got: "integer",
                },
                "user_to: expected a uuid (string or msgpack uuid), got integer",
            ),
            (
                Error::Uuid {
                    arg: Arg::After,
                    value: "\"x\"".into(),
                },
                "opts.after: malformed uuid \"x\"",
            ),
            (
                Error::NilUuid { arg: Arg::DialogId },
                "dialog_id: the nil uuid is not a valid id",
            ),
            (
                Error::KeyLength { bytes: 256 },
                "dialog_id: a dialog key must be 1 to 255 bytes, got 256",
            ),
            (
                Error::KeyEncoding,
                "dialog_id: a dialog key must be valid UTF-8",
            ),
            (
                Error::TextLength { chars: 4097 },
                "text: must be 1 to 4096 characters, got 4097",
            ),
            (Error::TextEncoding, "text: not valid UTF-8"),
            (
                Error::UnknownOption {
                    name: "\"lim\"".into(),
                },
                "opts: unknown option \"lim\"",
            ),
            (
                Error::RepeatedOption { name: "limit" },
                "opts: option \"limit\" given twice",
            ),
            (
                Error::OptionKey { got: "integer" },
                "opts: option names must be strings, got integer",
            ),
            (
                Error::OptionRange {
                    arg: Arg::Limit,
                    min: 1,
                    max: 1000,
                    got: "-1".into(),
                },
                "opts.limit: must be 1 to 1000, got -1",
            ),
            (
                Error::ReadOnly { proc: "new_dialog" },
                "new_dialog: this instance is read-only; send writes to the master",
            ),
            (
                Error::ReadOnly { proc: "new_dialog" }.in_write("mark_read"),
                "mark_read: this instance is read-only; send writes to the master",
            ),
            (
                Error::NotInDialog,
                "up_to_id: not a message of this user in this dialog",
            ),
            (Error::Retry, "mark_read: the dialog kept changing; retry"),
            (
                Error::RequestConflict { message_id: id },
                "opts.request_id: already used for message \
                 01010101-0101-0101-0101-010101010101 with other content",
            ),
            (
                Error::Internal {
                    proc: "new_dialog",
                    what: "boom".into(),
                },
                "new_dialog: internal error: boom",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }
}
