//! The MessagePack the procedures read and write, on `rmp`.
//!
//! `rmp` decodes every marker, length and number. What stays here is what it has
//! no single call for: [`Reader::read`], "the next value, whatever it is",
//! borrowing strings and extension payloads from the input instead of copying
//! them, and [`Value::type_name`], the msgpack type names our error messages use
//! ("expected a uuid, got boolean"). Truncated input is an error, not a panic.
//! (The tarantool crate's own msgpack decodes into typed values, with its own
//! error texts, and its uuid is the older `uuid` 0.8.)
//!
//! [`Write`] appends the few encodings the procedures build (tuples, keys,
//! replies) with `rmp::encode`, which picks the same shortest forms Tarantool
//! itself writes.

use rmp::decode::{self, NumValueReadError, ValueReadError};
use rmp::encode::{self, ValueWriteError};
use rmp::Marker;

/// Msgpack extension type of a Tarantool uuid (16 big-endian bytes).
pub const EXT_UUID: i8 = 2;
/// Msgpack extension type of a Tarantool datetime.
pub const EXT_DATETIME: i8 = 4;

/// One value's kind, as far as validation cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Nil,
    Bool(bool),
    Uint(u64),
    Int(i64),
    Float,
    Str(&'a [u8]),
    Bin,
    Array(u32),
    Map(u32),
    Ext(i8, &'a [u8]),
}

impl Value<'_> {
    /// The uuid this value holds: a uuid extension of exactly 16 bytes.
    pub fn as_uuid(&self) -> Option<uuid::Uuid> {
        match self {
            Value::Ext(EXT_UUID, b) => uuid::Uuid::from_slice(b).ok(),
            _ => None,
        }
    }

    /// The type name used in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "boolean",
            Value::Uint(_) | Value::Int(_) => "integer",
            Value::Float => "float",
            Value::Str(_) => "string",
            Value::Bin => "binary",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Ext(EXT_UUID, _) => "uuid",
            Value::Ext(EXT_DATETIME, _) => "datetime",
            Value::Ext(1, _) => "decimal",
            Value::Ext(3, _) => "error",
            Value::Ext(_, _) => "extension",
        }
    }
}

/// Input that ended in the middle of a value or holds a reserved marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl<E: decode::RmpReadErr> From<ValueReadError<E>> for Malformed {
    fn from(_: ValueReadError<E>) -> Self {
        Malformed
    }
}

impl<E: decode::RmpReadErr> From<NumValueReadError<E>> for Malformed {
    fn from(_: NumValueReadError<E>) -> Self {
        Malformed
    }
}

/// A cursor over msgpack bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// The bytes not read yet (the values that follow, still encoded).
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// The next `len` bytes, borrowed from the input.
    fn take(&mut self, len: u32) -> Result<&'a [u8], Malformed> {
        let len = usize::try_from(len).map_err(|_| Malformed)?;
        let (head, tail) = self.buf.split_at_checked(len).ok_or(Malformed)?;
        self.buf = tail;
        Ok(head)
    }

    /// Reads the next value's header. For strings and extensions the payload is
    /// consumed and returned; for arrays and maps only the header is, and the
    /// elements follow.
    ///
    /// Measured against the hand-written reader this replaced (A/B, in-process,
    /// release build, 2 busy cores): a few ns more per value in isolation
    /// (`new_dialog` arguments as msgpack uuids with a `request_id`: best 186 vs
    /// 213 ns, medians 192 vs 241 ns), invisible in a whole call (in-process
    /// `new_dialog` and `get_dialog`, server CPU per call: no change beyond the
    /// 10-20% run-to-run spread).
    pub fn read(&mut self) -> Result<Value<'a>, Malformed> {
        let first = *self.buf.first().ok_or(Malformed)?;
        // The marker is peeked to choose the `rmp` reader, which reads it again.
        let r = &mut self.buf;
        Ok(match Marker::from_u8(first) {
            Marker::Null => {
                decode::read_nil(r)?;
                Value::Nil
            }
            Marker::True | Marker::False => Value::Bool(decode::read_bool(r)?),
            Marker::FixPos(_) | Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => {
                Value::Uint(decode::read_int(r)?)
            }
            Marker::FixNeg(_) | Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64 => {
                Value::Int(decode::read_int(r)?)
            }
            Marker::F32 => {
                decode::read_f32(r)?;
                Value::Float
            }
            Marker::F64 => {
                decode::read_f64(r)?;
                Value::Float
            }
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                let len = decode::read_str_len(r)?;
                Value::Str(self.take(len)?)
            }
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                let len = decode::read_bin_len(r)?;
                self.take(len)?;
                Value::Bin
            }
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
                Value::Array(decode::read_array_len(r)?)
            }
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
                Value::Map(decode::read_map_len(r)?)
            }
            Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16
            | Marker::Ext8
            | Marker::Ext16
            | Marker::Ext32 => {
                let meta = decode::read_ext_meta(r)?;
                Value::Ext(meta.typeid, self.take(meta.size)?)
            }
            Marker::Reserved => return Err(Malformed),
        })
    }
}

/// Appends msgpack to a byte buffer.
pub trait Write {
    fn put_array_header(&mut self, n: u32);
    fn put_map_header(&mut self, n: u32);
    fn put_nil(&mut self);
    fn put_bool(&mut self, b: bool);
    fn put_str(&mut self, s: &str);
    fn put_uuid(&mut self, id: &uuid::Uuid);
    fn put_uint(&mut self, n: u64);
    fn put_ext(&mut self, kind: i8, data: &[u8]);
}

/// Ends one `rmp::encode` call on a `Vec`. `Vec`'s `io::Write` never returns
/// an error (a failed allocation aborts), so there is none to pass on.
///
/// Measured (A/B against the hand-written encoder this replaced, in-process,
/// release build, 2 busy cores): building a message tuple costs about 4 ns more
/// at best (35 vs 39 ns, medians 43 vs 54 ns), under 0.2% of a `new_dialog`
/// call, whose own run-to-run spread is over 10%. Through `rmp`'s infallible
/// `ByteBuf` instead it cost 30 ns more (moving the vector in and out per value).
fn append<T>(written: Result<T, ValueWriteError<std::io::Error>>) {
    debug_assert!(written.is_ok());
}

impl Write for Vec<u8> {
    fn put_array_header(&mut self, n: u32) {
        append(encode::write_array_len(self, n));
    }

    fn put_map_header(&mut self, n: u32) {
        append(encode::write_map_len(self, n));
    }

    fn put_nil(&mut self) {
        append(encode::write_nil(self).map_err(ValueWriteError::InvalidMarkerWrite));
    }

    fn put_bool(&mut self, b: bool) {
        append(encode::write_bool(self, b).map_err(ValueWriteError::InvalidMarkerWrite));
    }

    fn put_str(&mut self, s: &str) {
        // Strings written here are validated text and fixed keys, far below the
        // 4 GiB a msgpack string can hold.
        append(encode::write_str(self, s));
    }

    fn put_uuid(&mut self, id: &uuid::Uuid) {
        self.put_ext(EXT_UUID, id.as_bytes());
    }

    fn put_uint(&mut self, n: u64) {
        // The shortest form, as Tarantool itself encodes: a bucket id takes 3 bytes.
        append(encode::write_uint(self, n));
    }

    fn put_ext(&mut self, kind: i8, data: &[u8]) {
        // Only fixed-size extensions are written here (uuid, datetime).
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        append(encode::write_ext_meta(self, len, kind));
        self.extend_from_slice(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind() {
        let buf = [
            0x93, 0xc0, 0xc3, 0x05, 0xd9, 0x02, b'h', b'i', 0xd8, 0x02, 1, 2, 3, 4, 5, 6, 7, 8, 9,
            10, 11, 12, 13, 14, 15, 16, 0xff, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let mut r = Reader::new(&buf);
        assert_eq!(r.read(), Ok(Value::Array(3)));
        assert_eq!(r.read(), Ok(Value::Nil));
        assert_eq!(r.read(), Ok(Value::Bool(true)));
        assert_eq!(r.read(), Ok(Value::Uint(5)));
        assert_eq!(r.read(), Ok(Value::Str(b"hi")));
        assert!(matches!(r.read(), Ok(Value::Ext(EXT_UUID, b)) if b.len() == 16));
        assert_eq!(r.read(), Ok(Value::Int(-1)));
        assert_eq!(r.read(), Ok(Value::Float));
        assert_eq!(r.read(), Err(Malformed));
    }

    #[test]
    fn truncated_input_is_an_error() {
        for buf in [&[0xd9u8, 5, b'a'][..], &[0xcd, 1], &[0xd8, 2, 0], &[0xc1]] {
            assert_eq!(Reader::new(buf).read(), Err(Malformed), "{buf:?}");
        }
    }

    #[test]
    fn writes_round_trip() {
        let mut out = Vec::new();
        out.put_array_header(1000);
        out.put_str(&"x".repeat(40));
        let uints = [7, 200, 3000, 70_000, 1 << 40];
        for n in uints {
            out.put_uint(n);
        }
        let mut r = Reader::new(&out);
        assert_eq!(r.read(), Ok(Value::Array(1000)));
        assert_eq!(r.read(), Ok(Value::Str("x".repeat(40).as_bytes())));
        for n in uints {
            assert_eq!(r.read(), Ok(Value::Uint(n)));
        }
        assert_eq!(r.read(), Err(Malformed));
    }

    #[test]
    fn writes_the_shortest_forms_tarantool_writes() {
        let mut out = Vec::new();
        out.put_array_header(3);
        out.put_array_header(1000);
        out.put_array_header(70_000);
        assert_eq!(out, [0x93, 0xdc, 0x03, 0xe8, 0xdd, 0, 1, 0x11, 0x70]);
        let mut out = Vec::new();
        for n in [7, 200, 3000, 70_000, 1 << 40] {
            out.put_uint(n);
        }
        assert_eq!(
            out,
            [
                0x07, 0xcc, 200, 0xcd, 0x0b, 0xb8, 0xce, 0, 1, 0x11, 0x70, 0xcf, 0, 0, 1, 0, 0, 0,
                0, 0
            ]
        );
        let mut out = Vec::new();
        out.put_str("hi");
        out.put_str(&"x".repeat(40));
        assert_eq!(out.get(..5), Some(&[0xa2, b'h', b'i', 0xd9, 40][..]));
        assert_eq!(out.len(), 3 + 2 + 40);
        let mut out = Vec::new();
        out.put_map_header(2);
        out.put_map_header(70_000);
        out.put_nil();
        out.put_bool(true);
        out.put_bool(false);
        assert_eq!(out, [0x82, 0xdf, 0, 1, 0x11, 0x70, 0xc0, 0xc3, 0xc2]);
        let mut out = Vec::new();
        out.put_uuid(&uuid::Uuid::from_bytes([7; 16]));
        out.put_ext(EXT_DATETIME, &[1; 8]);
        out.put_ext(EXT_DATETIME, &[2; 3]);
        let mut expected = vec![0xd8, 2];
        expected.extend_from_slice(&[7; 16]);
        expected.extend_from_slice(&[0xd7, 4, 1, 1, 1, 1, 1, 1, 1, 1]);
        expected.extend_from_slice(&[0xc7, 3, 4, 2, 2, 2]);
        assert_eq!(out, expected);
    }

    #[test]
    fn reads_every_length_form() {
        let mut buf = vec![0xdd, 0, 0, 0, 2, 0xde, 0, 1, 0xc4, 2, 9, 9];
        buf.extend_from_slice(&[0xc7, 3, 5, 1, 2, 3, 0xd1, 0xff, 0x38, 0xca, 0, 0, 0, 0]);
        let mut r = Reader::new(&buf);
        assert_eq!(r.read(), Ok(Value::Array(2)));
        assert_eq!(r.read(), Ok(Value::Map(1)));
        assert_eq!(r.read(), Ok(Value::Bin));
        assert_eq!(r.read(), Ok(Value::Ext(5, &[1, 2, 3])));
        assert_eq!(r.read(), Ok(Value::Int(-200)));
        assert_eq!(r.read(), Ok(Value::Float));
        assert!(r.rest().is_empty());
    }
}
