//! A minimal blocking IPROTO client: login and CALL with raw msgpack arguments.
//!
//! rusty_tarantool turns an error reply into an `io::Error` carrying only the message,
//! dropping the error code; and its serde encoding cannot produce a msgpack string
//! that is not UTF-8. This client keeps both: it sends argument bytes exactly as given
//! and returns the reply's error code.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rmpv::Value;
use sha1::{Digest, Sha1};

const GREETING_LEN: usize = 128;
const SALT_LEN: usize = 20;
const IO_TIMEOUT: Duration = Duration::from_secs(30);

// IPROTO keys and request types (Tarantool's iproto_constants.h).
const KEY_CODE: u8 = 0x00;
const KEY_SYNC: u8 = 0x01;
const KEY_TUPLE: u8 = 0x21;
const KEY_FUNCTION_NAME: u8 = 0x22;
const KEY_USER_NAME: u8 = 0x23;
const KEY_DATA: u64 = 0x30;
const KEY_ERROR_24: u64 = 0x31;
const TYPE_CALL: u8 = 0x0a;
const TYPE_AUTH: u8 = 0x07;
const TYPE_ERROR_FLAG: u64 = 0x8000;

/// A Tarantool error reply: its code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: u32,
    pub message: String,
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error {}: {}", self.code, self.message)
    }
}

/// What a request got: the reply's data, or the error reply.
pub type Reply = Result<Value, ErrorReply>;

/// One logged-in connection.
pub struct RawConn {
    stream: TcpStream,
    sync: u64,
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

impl RawConn {
    /// Connects and logs in; a refused login is an `io::Error` with the server's message.
    pub fn connect(addr: &str, user: &str, password: &str) -> io::Result<RawConn> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut greeting = [0u8; GREETING_LEN];
        stream.read_exact(&mut greeting)?;
        let salt_line = std::str::from_utf8(&greeting[64..])
            .map_err(|_| other("greeting salt is not text"))?
            .trim_end_matches(['\0', ' ', '\n']);
        let salt = base64::decode(salt_line).map_err(|e| other(format!("salt: {e}")))?;
        if salt.len() < SALT_LEN {
            return Err(other("greeting salt too short"));
        }
        let mut conn = RawConn { stream, sync: 0 };

        let hash1 = Sha1::digest(password.as_bytes());
        let hash2 = Sha1::digest(hash1);
        let mut h = Sha1::new();
        h.update(&salt[..SALT_LEN]);
        h.update(hash2);
        let scramble: Vec<u8> = h.finalize().iter().zip(hash1).map(|(a, b)| a ^ b).collect();

        let mut body = Vec::new();
        rmp::encode::write_map_len(&mut body, 2).unwrap();
        rmp::encode::write_uint(&mut body, KEY_USER_NAME.into()).unwrap();
        rmp::encode::write_str(&mut body, user).unwrap();
        rmp::encode::write_uint(&mut body, KEY_TUPLE.into()).unwrap();
        rmp::encode::write_array_len(&mut body, 2).unwrap();
        rmp::encode::write_str(&mut body, "chap-sha1").unwrap();
        rmp::encode::write_bin(&mut body, &scramble).unwrap();
        match conn.request(TYPE_AUTH, &body)? {
            Ok(_) => Ok(conn),
            Err(e) => Err(io::Error::new(io::ErrorKind::PermissionDenied, e.message)),
        }
    }

    /// CALL `function` with `args`, the msgpack encoding of the argument array.
    pub fn call(&mut self, function: &str, args: &[u8]) -> io::Result<Reply> {
        let mut body = Vec::new();
        rmp::encode::write_map_len(&mut body, 2).unwrap();
        rmp::encode::write_uint(&mut body, KEY_FUNCTION_NAME.into()).unwrap();
        rmp::encode::write_str(&mut body, function).unwrap();
        rmp::encode::write_uint(&mut body, KEY_TUPLE.into()).unwrap();
        body.extend_from_slice(args);
        self.request(TYPE_CALL, &body)
    }

    fn request(&mut self, request_type: u8, body: &[u8]) -> io::Result<Reply> {
        self.sync += 1;
        let mut header = Vec::new();
        rmp::encode::write_map_len(&mut header, 2).unwrap();
        rmp::encode::write_uint(&mut header, KEY_CODE.into()).unwrap();
        rmp::encode::write_uint(&mut header, request_type.into()).unwrap();
        rmp::encode::write_uint(&mut header, KEY_SYNC.into()).unwrap();
        rmp::encode::write_uint(&mut header, self.sync).unwrap();
        let len = u32::try_from(header.len() + body.len()).map_err(|_| other("too big"))?;
        let mut packet = vec![0xce];
        packet.extend_from_slice(&len.to_be_bytes());
        packet.extend_from_slice(&header);
        packet.extend_from_slice(body);
        self.stream.write_all(&packet)?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        let mut len_buf = [0u8; 5];
        self.stream.read_exact(&mut len_buf)?;
        if len_buf[0] != 0xce {
            return Err(other("reply length is not a uint32"));
        }
        let len = u32::from_be_bytes([len_buf[1], len_buf[2], len_buf[3], len_buf[4]]);
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf)?;
        let mut cur = io::Cursor::new(&buf[..]);
        let header = rmpv::decode::read_value(&mut cur).map_err(|e| other(e.to_string()))?;
        let body = if (cur.position() as usize) < buf.len() {
            rmpv::decode::read_value(&mut cur).map_err(|e| other(e.to_string()))?
        } else {
            Value::Map(vec![])
        };
        let code = map_get(&header, u64::from(KEY_CODE))
            .and_then(Value::as_u64)
            .ok_or_else(|| other("reply without a code"))?;
        if code & TYPE_ERROR_FLAG == 0 {
            return Ok(Ok(map_get(&body, KEY_DATA).cloned().unwrap_or(Value::Nil)));
        }
        let message = map_get(&body, KEY_ERROR_24)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(Err(ErrorReply {
            code: (code & !TYPE_ERROR_FLAG) as u32,
            message,
        }))
    }
}

/// The value under integer key `key` of a msgpack map.
pub fn map_get(map: &Value, key: u64) -> Option<&Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_u64() == Some(key))
        .map(|(_, v)| v)
}
