//! A client of Tarantool's text admin console over a unix socket: what a test needs
//! to look at the spaces themselves (their sizes, box.slab.info()) on a server from
//! [`crate::server::Server::start_with_admin`].
//!
//! Each request is one line of Lua; the console answers in YAML, ending with
//! `...`. [`Admin::eval`] returns one value as text, carried as hex so that no YAML
//! quoting or folding can change it.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(60);
const REPLY_END: &[u8] = b"\n...\n";

/// One console connection, running as admin.
pub struct Admin {
    stream: UnixStream,
    buf: Vec<u8>,
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

impl Admin {
    /// Connects (retrying while the server opens the socket) and reads the greeting.
    pub fn connect(path: &Path) -> io::Result<Admin> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => sleep(Duration::from_millis(50)),
            }
        };
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut admin = Admin {
            stream,
            buf: Vec::new(),
        };
        // The greeting: two lines.
        while admin.buf.iter().filter(|&&b| b == b'\n').count() < 2 {
            admin.fill()?;
        }
        let second = admin
            .buf
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(1)
            .map(|(i, _)| i)
            .unwrap_or(0);
        admin.buf.drain(..=second);
        Ok(admin)
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(other("admin console closed"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Sends one line of Lua; returns the console's raw YAML reply.
    pub fn run(&mut self, lua: &str) -> io::Result<String> {
        assert!(!lua.contains('\n'), "one line per request");
        self.stream.write_all(format!("{lua}\n").as_bytes())?;
        loop {
            if let Some(pos) = self
                .buf
                .windows(REPLY_END.len())
                .position(|w| w == REPLY_END)
            {
                let reply: Vec<u8> = self.buf.drain(..pos + REPLY_END.len()).collect();
                return Ok(String::from_utf8_lossy(&reply[..pos]).into_owned());
            }
            self.fill()?;
        }
    }

    /// `tostring()` of one Lua expression, evaluated as admin. A Lua error is an
    /// `io::Error` carrying the console's reply.
    pub fn eval(&mut self, expr: &str) -> io::Result<String> {
        let reply = self.run(&format!("return string.hex(tostring({expr}))"))?;
        let value = reply
            .lines()
            .nth(1)
            .and_then(|l| l.strip_prefix("- "))
            .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"'))
            .filter(|v| v.len() % 2 == 0 && v.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| other(format!("admin eval {expr:?}: {reply}")))?;
        let bytes: Vec<u8> = (0..value.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&value[i..i + 2], 16).unwrap_or(0))
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A whole number from Lua (`string.format('%d')` keeps 64-bit values exact).
    pub fn eval_u64(&mut self, expr: &str) -> io::Result<u64> {
        let text = self.eval(&format!("string.format('%d', {expr})"))?;
        text.parse()
            .map_err(|_| other(format!("admin eval {expr:?}: not a number: {text}")))
    }
}
