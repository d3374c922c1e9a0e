//! Validation of call arguments shared by both procedures: uuids, text, the
//! argument list itself and option maps. Each function reads one value from a
//! [`Reader`] and either returns it typed or says what is wrong with it.

use uuid::Uuid;

use crate::error::{Arg, Error, Result};
use crate::ids::{key_dialog, MAX_KEY_BYTES};
use crate::msgpack::{Reader, Value, EXT_UUID};
use crate::MAX_TEXT_CHARS;

const EXPECTED_UUID: &str = "a uuid (string or msgpack uuid)";
const EXPECTED_DIALOG: &str = "a uuid (string or msgpack uuid) or a dialog key (string)";
/// Length of a uuid's canonical (hyphenated) string form.
const CANONICAL_LEN: usize = 36;
/// How much of a bad string an error message quotes.
const QUOTE_CHARS: usize = 40;

/// An internal error for input that is not msgpack at all (Tarantool validates
/// the request body before calling us, so this means a bug, not a bad client).
fn malformed(proc: &'static str) -> Error {
    Error::Internal {
        proc,
        what: "malformed msgpack arguments".into(),
    }
}

/// The call's argument list: its length, checked against what `proc` accepts.
pub struct Args<'a> {
    pub proc: &'static str,
    pub reader: Reader<'a>,
    pub count: u32,
}

impl<'a> Args<'a> {
    /// Opens the argument array and checks that it holds `min..=max` values.
    pub fn open(
        proc: &'static str,
        buf: &'a [u8],
        min: u32,
        max: u32,
        signature: &'static str,
    ) -> Result<Self> {
        let mut reader = Reader::new(buf);
        let count = match reader.read() {
            Ok(Value::Array(n)) => n,
            _ => return Err(malformed(proc)),
        };
        if count < min || count > max {
            return Err(Error::Arity {
                proc,
                expected: signature,
                got: count,
            });
        }
        Ok(Args {
            proc,
            reader,
            count,
        })
    }

    /// The next argument's value header.
    pub fn read(&mut self) -> Result<Value<'a>> {
        self.reader.read().map_err(|_| malformed(self.proc))
    }
}

/// A uuid given as a msgpack uuid or a canonical string.
pub fn uuid(arg: Arg, v: Value<'_>) -> Result<Uuid> {
    let id = match v {
        Value::Ext(EXT_UUID, _) => v.as_uuid().ok_or(Error::Type {
            arg,
            expected: EXPECTED_UUID,
            got: "malformed uuid extension",
        })?,
        Value::Str(s) => parse_canonical(s).ok_or_else(|| Error::Uuid {
            arg,
            value: quote(s),
        })?,
        other => {
            return Err(Error::Type {
                arg,
                expected: EXPECTED_UUID,
                got: other.type_name(),
            })
        }
    };
    non_nil(arg, id)
}

/// `id`, unless it is the nil uuid, which is never a valid id.
fn non_nil(arg: Arg, id: Uuid) -> Result<Uuid> {
    if id.is_nil() {
        return Err(Error::NilUuid { arg });
    }
    Ok(id)
}

/// A dialog id: a uuid (msgpack, or its canonical string), or a string key that
/// names a dialog ([`key_dialog`]: 1..=[`MAX_KEY_BYTES`] bytes of UTF-8). A string
/// that reads as a uuid in another notation (braces, `urn:uuid:`, 32 hex digits)
/// or as a mistyped one ([`looks_like_uuid`]) is a mistake, not a key: refused as
/// a malformed uuid, as before keys existed.
pub fn dialog_id(v: Value<'_>) -> Result<Uuid> {
    let arg = Arg::DialogId;
    let Value::Str(s) = v else {
        return match v {
            Value::Ext(EXT_UUID, _) => uuid(arg, v),
            other => Err(Error::Type {
                arg,
                expected: EXPECTED_DIALOG,
                got: other.type_name(),
            }),
        };
    };
    if let Some(id) = parse_canonical(s) {
        return non_nil(arg, id);
    }
    if looks_like_uuid(s) {
        return Err(Error::Uuid {
            arg,
            value: quote(s),
        });
    }
    if s.is_empty() || s.len() > MAX_KEY_BYTES {
        return Err(Error::KeyLength { bytes: s.len() });
    }
    let key = std::str::from_utf8(s).map_err(|_| Error::KeyEncoding)?;
    Ok(key_dialog(key))
}

/// A dialog id or nil.
pub fn optional_dialog_id(v: Value<'_>) -> Result<Option<Uuid>> {
    match v {
        Value::Nil => Ok(None),
        v => dialog_id(v).map(Some),
    }
}

/// How long a string of hex digits and hyphens is when it is meant as a uuid: the
/// 32-digit and the canonical form, and either with a digit or a hyphen too few
/// or too many (a typo, not a key).
const UUID_LIKE_CHARS: std::ops::RangeInclusive<usize> = 30..=40;

/// True for a string that is meant as a uuid: after surrounding white space, and
/// inside `{...}` or after `urn:uuid:`, [`UUID_LIKE_CHARS`] characters that are
/// all hex digits and hyphens.
fn looks_like_uuid(s: &[u8]) -> bool {
    let s = s.trim_ascii();
    let inner = s
        .strip_prefix(b"{")
        .and_then(|rest| rest.strip_suffix(b"}"))
        .or_else(|| {
            s.get(..9)
                .filter(|p| p.eq_ignore_ascii_case(b"urn:uuid:"))
                .and_then(|_| s.get(9..))
        })
        .unwrap_or(s);
    UUID_LIKE_CHARS.contains(&inner.len())
        && inner.iter().all(|&c| c.is_ascii_hexdigit() || c == b'-')
}

/// Parses exactly `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex digits in either
/// case. Braces, urn: prefixes and the 32-digit form are refused: one spelling,
/// so that one id has one string form. `uuid` parses; the length check is what
/// keeps its other spellings out (36 bytes is only ever the hyphenated form).
fn parse_canonical(s: &[u8]) -> Option<Uuid> {
    if s.len() != CANONICAL_LEN {
        return None;
    }
    Uuid::try_parse_ascii(s).ok()
}

/// A printable, bounded excerpt of client bytes for an error message.
fn quote(s: &[u8]) -> String {
    let text = String::from_utf8_lossy(s);
    let mut excerpt: String = text.chars().take(QUOTE_CHARS).collect();
    if text.chars().nth(QUOTE_CHARS).is_some() {
        excerpt.push('…');
    }
    format!("{excerpt:?}")
}

/// Message text: a UTF-8 string of `1..=MAX_TEXT_CHARS` characters.
pub fn text(v: Value<'_>) -> Result<&str> {
    let bytes = match v {
        Value::Str(s) => s,
        other => {
            return Err(Error::Type {
                arg: Arg::Text,
                expected: "a string",
                got: other.type_name(),
            })
        }
    };
    let text = std::str::from_utf8(bytes).map_err(|_| Error::TextEncoding)?;
    // A character is at least one byte: short strings need no count beyond the
    // empty check; long ones are counted up to one past the limit.
    if text.is_empty() || text.len() > MAX_TEXT_CHARS {
        let chars = text.chars().take(MAX_TEXT_CHARS + 1).count();
        if chars == 0 || chars > MAX_TEXT_CHARS {
            return Err(Error::TextLength {
                chars: text.chars().count(),
            });
        }
    }
    Ok(text)
}

/// Walks an options map (`nil` and an empty array count as no options: Lua
/// clients send `{}` as an empty array), calling `each(name, value)` for every
/// entry whose value is not nil. Rejects non-string keys and repeated keys.
pub fn options<'a>(
    args: &mut Args<'a>,
    known: &[&'static str],
    mut each: impl FnMut(&'static str, Value<'a>) -> Result<()>,
) -> Result<()> {
    let entries = match args.read()? {
        Value::Nil | Value::Array(0) => return Ok(()),
        Value::Map(n) => n,
        other => {
            return Err(Error::Type {
                arg: Arg::Opts,
                expected: "a map",
                got: other.type_name(),
            })
        }
    };
    let mut seen = 0u32;
    for _ in 0..entries {
        let key = match args.read()? {
            Value::Str(k) => k,
            other => {
                return Err(Error::OptionKey {
                    got: other.type_name(),
                })
            }
        };
        let Some((bit, name)) = known
            .iter()
            .enumerate()
            .find(|(_, name)| name.as_bytes() == key)
        else {
            return Err(Error::UnknownOption { name: quote(key) });
        };
        let mask = 1u32
            .checked_shl(u32::try_from(bit).unwrap_or(u32::MAX))
            .unwrap_or(0);
        if seen & mask != 0 {
            return Err(Error::RepeatedOption { name });
        }
        seen |= mask;
        let value = args.read()?;
        if value != Value::Nil {
            each(name, value)?;
        }
    }
    Ok(())
}

/// A boolean option.
pub fn boolean(arg: Arg, v: Value<'_>) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(b),
        other => Err(Error::Type {
            arg,
            expected: "a boolean",
            got: other.type_name(),
        }),
    }
}

/// An integer option within `min..=max`.
pub fn integer(arg: Arg, v: Value<'_>, min: u64, max: u64) -> Result<u64> {
    let out_of_range = |got: String| Error::OptionRange { arg, min, max, got };
    match v {
        Value::Uint(n) if (min..=max).contains(&n) => Ok(n),
        Value::Uint(n) => Err(out_of_range(n.to_string())),
        Value::Int(n) => match u64::try_from(n) {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(out_of_range(n.to_string())),
        },
        other => Err(Error::Type {
            arg,
            expected: "an integer",
            got: other.type_name(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_uuids_only() {
        let id = "0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01";
        assert_eq!(
            parse_canonical(id.as_bytes()).map(|u| u.to_string()),
            Some(id.to_string())
        );
        assert_eq!(
            parse_canonical(id.to_uppercase().as_bytes()).map(|u| u.to_string()),
            Some(id.to_string())
        );
        for bad in [
            "",
            "0b0f9b9e4a3e4b8e9d1c1f6f0c9f2a01",
            "{0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01}",
            "0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a0g",
            "0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a011",
            "0b0f9b9e+4a3e-4b8e-9d1c-1f6f0c9f2a01",
            "0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a0é",
            "0b0f9b9e4-a3e-4b8e-9d1c-1f6f0c9f2a01",
            "0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2é1",
            " b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01",
            "0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a0\0",
            "urn:uuid:0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01",
            "------------------------------------",
        ] {
            assert_eq!(parse_canonical(bad.as_bytes()), None, "{bad}");
        }
    }

    fn dialog_of(s: &str) -> Result<Uuid> {
        dialog_id(Value::Str(s.as_bytes()))
    }

    #[test]
    fn a_canonical_string_stays_its_uuid() {
        let id = "0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01";
        assert_eq!(dialog_of(id).ok(), Uuid::parse_str(id).ok());
        assert_eq!(dialog_of(&id.to_uppercase()).ok(), Uuid::parse_str(id).ok());
        let nil = dialog_of("00000000-0000-0000-0000-000000000000");
        assert!(matches!(nil, Err(Error::NilUuid { arg: Arg::DialogId })));
    }

    #[test]
    fn other_strings_are_keys() {
        let report_key = "0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a017c9e6679-7425-40de-944b-e07fc1f90ae7";
        for key in [
            "a",
            "deadbeef",
            report_key,
            "чат №1",
            "0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01 and more",
            "0b0f9b9e4-a3e-4b8e-9d1c-1f6f0c9f2a01x",
            "0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01-0b0f9b9e",
            "deadbeefdeadbeefdeadbeefdeadb",
        ] {
            assert_eq!(dialog_of(key).ok(), Some(key_dialog(key)), "{key}");
        }
        let longest = "é".repeat(MAX_KEY_BYTES / 2) + "x";
        assert_eq!(longest.len(), MAX_KEY_BYTES);
        assert_eq!(dialog_of(&longest).ok(), Some(key_dialog(&longest)));
    }

    #[test]
    fn uuids_in_other_notations_are_refused_as_uuids() {
        for bad in [
            "0b0f9b9e4a3e4b8e9d1c1f6f0c9f2a01",
            "{0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01}",
            "urn:uuid:0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01",
            "URN:UUID:0b0f9b9e4a3e4b8e9d1c1f6f0c9f2a01",
            "0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a0",
            "0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a011",
            "0b0f9b9e4-a3e-4b8e-9d1c-1f6f0c9f2a01",
            " 0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a01\n",
            "------------------------------------",
        ] {
            let e = dialog_of(bad).err();
            assert!(
                matches!(
                    e,
                    Some(Error::Uuid {
                        arg: Arg::DialogId,
                        ..
                    })
                ),
                "{bad}: {e:?}"
            );
        }
        // 36 characters that are not all hex digits and hyphens: a key.
        let g = "0b0f9b9e-4a3e-4b8e-9d1c-1f6f0c9f2a0g";
        assert_eq!(dialog_of(g).ok(), Some(key_dialog(g)));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(matches!(dialog_of(""), Err(Error::KeyLength { bytes: 0 })));
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            dialog_of(&long),
            Err(Error::KeyLength { bytes: 256 })
        ));
        assert!(matches!(
            dialog_id(Value::Str(b"ab\xffcd")),
            Err(Error::KeyEncoding)
        ));
        assert!(matches!(
            dialog_id(Value::Uint(7)),
            Err(Error::Type {
                arg: Arg::DialogId,
                expected: EXPECTED_DIALOG,
                got: "integer"
            })
        ));
    }
}
