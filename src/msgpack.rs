//! The little MessagePack the procedures need, read and written by hand.
//!
//! Arguments arrive as one msgpack array. [`Reader`] walks it without copying or
//! allocating and reports every value it did not expect by its msgpack type name,
//! so that validation can say "expected a uuid, got boolean". It never indexes
//! out of bounds: truncated input is an error, not a panic.

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
            Value::Ext(EXT_UUID, b) => <[u8; 16]>::try_from(*b).ok().map(uuid::Uuid::from_bytes),
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

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.buf.len() {
            return Err(Malformed);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, Malformed> {
        let [b] = self.array()?;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn len8(&mut self) -> Result<usize, Malformed> {
        Ok(usize::from(self.byte()?))
    }

    fn len16(&mut self) -> Result<usize, Malformed> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn len32(&mut self) -> Result<usize, Malformed> {
        usize::try_from(u32::from_be_bytes(self.array()?)).map_err(|_| Malformed)
    }

    fn ext(&mut self, len: usize) -> Result<Value<'a>, Malformed> {
        let kind = i8::from_be_bytes(self.array()?);
        Ok(Value::Ext(kind, self.take(len)?))
    }

    /// Reads the next value's header. For strings and extensions the payload is
    /// consumed and returned; for arrays and maps only the header is, and the
    /// elements follow.
    pub fn read(&mut self) -> Result<Value<'a>, Malformed> {
        let m = self.byte()?;
        Ok(match m {
            0x00..=0x7f => Value::Uint(u64::from(m)),
            0x80..=0x8f => Value::Map(u32::from(m & 0x0f)),
            0x90..=0x9f => Value::Array(u32::from(m & 0x0f)),
            0xa0..=0xbf => Value::Str(self.take(usize::from(m & 0x1f))?),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 => {
                let n = self.len8()?;
                self.take(n)?;
                Value::Bin
            }
            0xc5 => {
                let n = self.len16()?;
                self.take(n)?;
                Value::Bin
            }
            0xc6 => {
                let n = self.len32()?;
                self.take(n)?;
                Value::Bin
            }
            0xc7 => {
                let n = self.len8()?;
                self.ext(n)?
            }
            0xc8 => {
                let n = self.len16()?;
                self.ext(n)?
            }
            0xc9 => {
                let n = self.len32()?;
                self.ext(n)?
            }
            0xca => {
                self.take(4)?;
                Value::Float
            }
            0xcb => {
                self.take(8)?;
                Value::Float
            }
            0xcc => Value::Uint(u64::from(self.byte()?)),
            0xcd => Value::Uint(u64::from(u16::from_be_bytes(self.array()?))),
            0xce => Value::Uint(u64::from(u32::from_be_bytes(self.array()?))),
            0xcf => Value::Uint(u64::from_be_bytes(self.array()?)),
            0xd0 => Value::Int(i64::from(i8::from_be_bytes(self.array()?))),
            0xd1 => Value::Int(i64::from(i16::from_be_bytes(self.array()?))),
            0xd2 => Value::Int(i64::from(i32::from_be_bytes(self.array()?))),
            0xd3 => Value::Int(i64::from_be_bytes(self.array()?)),
            0xd4 => self.ext(1)?,
            0xd5 => self.ext(2)?,
            0xd6 => self.ext(4)?,
            0xd7 => self.ext(8)?,
            0xd8 => self.ext(16)?,
            0xd9 => {
                let n = self.len8()?;
                Value::Str(self.take(n)?)
            }
            0xda => {
                let n = self.len16()?;
                Value::Str(self.take(n)?)
            }
            0xdb => {
                let n = self.len32()?;
                Value::Str(self.take(n)?)
            }
            0xdc => Value::Array(u32::from(u16::from_be_bytes(self.array()?))),
            0xdd => Value::Array(u32::from_be_bytes(self.array()?)),
            0xde => Value::Map(u32::from(u16::from_be_bytes(self.array()?))),
            0xdf => Value::Map(u32::from_be_bytes(self.array()?)),
            0xe0..=0xff => Value::Int(i64::from(i8::from_be_bytes([m]))),
            0xc1 => return Err(Malformed),
        })
    }
}

/// Appends msgpack to a byte buffer.
pub trait Write {
    fn put_array_header(&mut self, n: u32);
    fn put_str(&mut self, s: &str);
    fn put_uuid(&mut self, id: &uuid::Uuid);
    fn put_uint(&mut self, n: u64);
    fn put_ext(&mut self, kind: i8, data: &[u8]);
}

impl Write for Vec<u8> {
    fn put_array_header(&mut self, n: u32) {
        if n < 16 {
            // n < 16, so the cast keeps every bit.
            self.push(0x90 | n as u8);
        } else if let Ok(n) = u16::try_from(n) {
            self.push(0xdc);
            self.extend_from_slice(&n.to_be_bytes());
        } else {
            self.push(0xdd);
            self.extend_from_slice(&n.to_be_bytes());
        }
    }

    fn put_str(&mut self, s: &str) {
        let len = s.len();
        if len < 32 {
            self.push(0xa0 | len as u8);
        } else if let Ok(n) = u8::try_from(len) {
            self.push(0xd9);
            self.push(n);
        } else if let Ok(n) = u16::try_from(len) {
            self.push(0xda);
            self.extend_from_slice(&n.to_be_bytes());
        } else {
            // Strings come from validated input, far below 4 GiB.
            self.push(0xdb);
            self.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        }
        self.extend_from_slice(s.as_bytes());
    }

    fn put_uuid(&mut self, id: &uuid::Uuid) {
        self.put_ext(EXT_UUID, id.as_bytes());
    }

    fn put_uint(&mut self, n: u64) {
        // The shortest form, as Tarantool itself encodes: a bucket id takes 3 bytes.
        if n < 0x80 {
            self.push(n as u8);
        } else if let Ok(n) = u8::try_from(n) {
            self.push(0xcc);
            self.push(n);
        } else if let Ok(n) = u16::try_from(n) {
            self.push(0xcd);
            self.extend_from_slice(&n.to_be_bytes());
        } else if let Ok(n) = u32::try_from(n) {
            self.push(0xce);
            self.extend_from_slice(&n.to_be_bytes());
        } else {
            self.push(0xcf);
            self.extend_from_slice(&n.to_be_bytes());
        }
    }

    fn put_ext(&mut self, kind: i8, data: &[u8]) {
        let marker = match data.len() {
            1 => Some(0xd4),
            2 => Some(0xd5),
            4 => Some(0xd6),
            8 => Some(0xd7),
            16 => Some(0xd8),
            _ => None,
        };
        match marker {
            Some(m) => self.push(m),
            None => {
                // Only fixed-size extensions are written here (uuid, datetime).
                self.push(0xc7);
                self.push(u8::try_from(data.len()).unwrap_or(u8::MAX));
            }
        }
        self.extend_from_slice(&kind.to_be_bytes());
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
}
