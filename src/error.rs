//! The errors a procedure replies with.
//!
//! Every refusal has a stable numeric code (the Tarantool error code the client
//! sees) and a message that starts with the argument it is about. The table in
//! README.md lists them; [`Error::code`] is the single source of the numbers.

use std::fmt;

use tarantool::error::BoxError;

/// Stable error codes, as documented in README.md.
pub mod code {
    /// Wrong number of arguments.
    pub const BAD_ARITY: u32 = 1001;
    /// An argument or option of the wrong msgpack type, or nil where a value is needed.
    pub const BAD_TYPE: u32 = 1002;
    /// A string that is not a canonical uuid, or the nil uuid.
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
}

/// Tarantool's own code for a write refused by a read-only instance (ER_READONLY).
pub const ER_READONLY: u32 = 7;
/// Tarantool's code for a duplicate key in a unique index (ER_TUPLE_FOUND).
pub const ER_TUPLE_FOUND: u32 = 3;
/// Tarantool's code for a transaction aborted by a concurrent one under memtx MVCC.
pub const ER_TRANSACTION_CONFLICT: u32 = 97;

/// Why a call was refused.
#[derive(Debug)]
pub enum Error {
    /// The call had `got` arguments; `expected` describes the signature.
    Arity {
        proc: &'static str,
        expected: &'static str,
        got: u32,
    },
    /// `arg` has msgpack type `got`; `expected` says what fits.
    Type {
        arg: Arg,
        expected: &'static str,
        got: &'static str,
    },
    /// `arg` is a string but not a canonical uuid; `value` is a printable excerpt.
    Uuid { arg: Arg, value: String },
    /// `arg` is the nil uuid, which is never a valid id.
    NilUuid { arg: Arg },
    /// The text has `chars` characters, outside `1..=MAX_TEXT_CHARS`.
    TextLength { chars: usize },
    /// The text is not valid UTF-8.
    TextEncoding,
    /// An option name this procedure does not know.
    UnknownOption { name: String },
    /// An option given more than once in one map.
    RepeatedOption { name: &'static str },
    /// An option key that is not a string.
    OptionKey { got: &'static str },
    /// An integer option outside its range.
    OptionRange {
        arg: Arg,
        min: u64,
        max: u64,
        got: String,
    },
    /// `new_dialog` on a read-only instance.
    ReadOnly,
    /// `opts.request_id` already stored another message.
    RequestConflict { message_id: uuid::Uuid },
    /// A panic or broken invariant inside `proc`.
    Internal { proc: &'static str, what: String },
    /// An error raised by Tarantool itself, passed through unchanged.
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
        }
    }
}

impl Error {
    /// The stable code of this error (Tarantool's own code for [`Error::Box`]).
    pub fn code(&self) -> u32 {
        match self {
            Error::Arity { .. } => code::BAD_ARITY,
            Error::Type { .. } => code::BAD_TYPE,
            Error::Uuid { .. } | Error::NilUuid { .. } => code::BAD_UUID,
            Error::TextLength { .. } | Error::TextEncoding => code::BAD_TEXT,
            Error::UnknownOption { .. }
            | Error::RepeatedOption { .. }
            | Error::OptionKey { .. }
            | Error::OptionRange { .. } => code::BAD_OPTION,
            Error::ReadOnly => code::READ_ONLY,
            Error::RequestConflict { .. } => code::REQUEST_CONFLICT,
            Error::Internal { .. } => code::INTERNAL,
            Error::Box(e) => e.error_code(),
        }
    }

    /// Makes this error the fiber's last error, which Tarantool sends to the client
    /// when the procedure returns -1.
    pub fn set_last(&self) {
        match self {
            Error::Box(e) => e.set_last(),
            other => BoxError::new(other.code(), other.to_string()).set_last(),
        }
    }

    /// The last error Tarantool raised, translated where the client deserves a
    /// clearer word (a write on a replica).
    pub fn last_box_error() -> Error {
        let e = BoxError::last();
        if e.error_code() == ER_READONLY {
            Error::ReadOnly
        } else {
            Error::Box(Box::new(e))
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Arity {
                proc,
                expected,
                got,
            } => write!(f, "{proc}: expected {expected}, got {got}"),
            Error::Type { arg, expected, got } => {
                write!(f, "{}: expected {expected}, got {got}", arg.name())
            }
            Error::Uuid { arg, value } => write!(f, "{}: malformed uuid {value}", arg.name()),
            Error::NilUuid { arg } => {
                write!(f, "{}: the nil uuid is not a valid id", arg.name())
            }
            Error::TextLength { chars } => write!(
                f,
                "text: must be 1 to {} characters, got {chars}",
                crate::MAX_TEXT_CHARS
            ),
            Error::TextEncoding => f.write_str("text: not valid UTF-8"),
            Error::UnknownOption { name } => write!(f, "opts: unknown option {name}"),
            Error::RepeatedOption { name } => write!(f, "opts: option {name:?} given twice"),
            Error::OptionKey { got } => {
                write!(f, "opts: option names must be strings, got {got}")
            }
            Error::OptionRange { arg, min, max, got } => {
                write!(f, "{}: must be {min} to {max}, got {got}", arg.name())
            }
            Error::ReadOnly => {
                f.write_str("new_dialog: this instance is read-only; send writes to the master")
            }
            Error::RequestConflict { message_id } => write!(
                f,
                "opts.request_id: already used for message {message_id} with other content"
            ),
            Error::Internal { proc, what } => write!(f, "{proc}: internal error: {what}"),
            Error::Box(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

/// What a procedure step returns.
pub type Result<T> = std::result::Result<T, Error>;
