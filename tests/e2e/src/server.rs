//! A dialogs server under test: `tarantool init.lua` as a child process.
//!
//! [`Server::start`] runs the repository's `init.lua` on a free 127.0.0.1 port, in a
//! temporary directory of its own, configured only through `DIALOGS_*` variables, and
//! returns once the application user can log in. Dropping the server kills it; if the
//! thread is panicking (a failed test), the tail of its log is printed and the
//! directory is kept for a look.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::iproto::RawConn;

/// Logged by init.lua once schema, functions and user are in place.
const READY_LOG_LINE: &str = "dialogs: listening on";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// First starts that may retry on a new port after losing the race for one.
const PORT_RETRIES: u32 = 3;
const MEMTX_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
/// Lines of the log shown when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// Test-only start script: the product's init.lua as shipped, then an admin console
/// on a unix socket. Nothing of it is part of the product.
pub const ADMIN_WRAPPER_LUA: &str = "\
-- Test-only start script: init.lua as shipped, plus an admin console on a unix socket.
local init_lua = assert(os.getenv('DIALOGS_TEST_INIT_LUA'))
local socket_path = assert(os.getenv('DIALOGS_TEST_ADMIN_SOCKET'))
dofile(init_lua)
require('console').listen('unix/:' .. socket_path)
";
/// The admin console's socket, in the server's directory.
const ADMIN_SOCKET: &str = "admin.sock";

/// The application user the harness configures.
pub const USER: &str = "dialogs";
/// Not init.lua's development default: a passing test proves this one is in force.
pub const PASSWORD: &str = "e2e-secret-pw";

/// The repository root: tests/e2e/../..
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The built module: `$DIALOGS_LIB_DIR`, else `make build`'s `target/dialogs`.
pub fn lib_dir() -> PathBuf {
    std::env::var_os("DIALOGS_LIB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/dialogs"))
}

/// The Tarantool under test: `$TARANTOOL` (`make test TARANTOOL=...` sets it to an
/// absolute path), else `tarantool` from PATH.
pub fn tarantool_binary() -> std::ffi::OsString {
    std::env::var_os("TARANTOOL")
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "tarantool".into())
}

/// A TCP port on 127.0.0.1 that nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One running (or stopped) dialogs instance and its directory.
pub struct Server {
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    /// The port it listens on, stable across restarts.
    pub port: u16,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    run_offset: u64,
    /// The Lua script the process runs: init.lua, or the admin wrapper.
    script: PathBuf,
}

impl Server {
    /// Starts a server with the harness's defaults; panics with its log if it fails.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with extra (or overriding) environment variables.
    pub fn start_with(extra_env: &[(&str, &str)]) -> Server {
        Server::start_inner(extra_env, false)
    }

    /// Starts a server that also opens Tarantool's admin console on a unix socket
    /// ([`Server::admin`]). The product's init.lua runs unchanged, from a wrapper
    /// script in the server's temporary directory ([`ADMIN_WRAPPER_LUA`]).
    pub fn start_with_admin(extra_env: &[(&str, &str)]) -> Server {
        Server::start_inner(extra_env, true)
    }

    /// A new admin console connection (servers from [`Server::start_with_admin`]).
    pub fn admin(&self) -> crate::admin::Admin {
        crate::admin::Admin::connect(&self.dir().join(ADMIN_SOCKET)).expect("admin console")
    }

    fn start_inner(extra_env: &[(&str, &str)], admin: bool) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("dialogs-e2e-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let mut env: Vec<(String, String)> = vec![
            ("DIALOGS_LISTEN".into(), format!("127.0.0.1:{port}")),
            (
                "DIALOGS_DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            ("DIALOGS_LIB_DIR".into(), lib_dir().display().to_string()),
            ("DIALOGS_USER".into(), USER.into()),
            ("DIALOGS_PASSWORD".into(), PASSWORD.into()),
            (
                "DIALOGS_MEMTX_MEMORY".into(),
                MEMTX_MEMORY_BYTES.to_string(),
            ),
            ("DIALOGS_WAL_MODE".into(), "write".into()),
        ];
        let log_path = dir.path().join("server.log");
        let mut script = repo_root().join("init.lua");
        if admin {
            let wrapper = dir.path().join("admin_init.lua");
            std::fs::write(&wrapper, ADMIN_WRAPPER_LUA).expect("admin wrapper");
            env.push(("DIALOGS_TEST_INIT_LUA".into(), script.display().to_string()));
            env.push((
                "DIALOGS_TEST_ADMIN_SOCKET".into(),
                dir.path().join(ADMIN_SOCKET).display().to_string(),
            ));
            script = wrapper;
        }
        let mut server = Server {
            dir: Some(dir),
            child: None,
            port,
            env,
            log_path,
            run_offset: 0,
            script,
        };
        for (k, v) in extra_env {
            server.set_env(k, v);
        }
        for attempt in 1..=PORT_RETRIES {
            server.spawn();
            match server.wait_ready() {
                Ok(()) => return server,
                // The port was free when chosen and taken before the server bound it.
                Err(_) if attempt < PORT_RETRIES && server.lost_port_race() => {
                    server.kill();
                    server.port = free_port();
                    server.set_env("DIALOGS_LISTEN", &format!("127.0.0.1:{}", server.port));
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn lost_port_race(&self) -> bool {
        self.log_of_run().contains("Address already in use")
    }

    fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// `host:port` for clients.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("server dir").path()
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("server log");
        self.run_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(tarantool_binary());
        cmd.arg(&self.script)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        for (k, _) in std::env::vars() {
            if k.starts_with("DIALOGS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.child = Some(cmd.spawn().expect("spawn tarantool"));
    }

    /// Polls until the set-up is logged and the application user can log in; else
    /// the reason, with the log of this run.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_error = String::from("not tried");
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                return Err(format!(
                    "server exited with {status} while starting:\n{}",
                    self.log_of_run()
                ));
            }
            if self.log_of_run().contains(READY_LOG_LINE) {
                match RawConn::connect(&self.addr(), USER, PASSWORD) {
                    Ok(_) => return Ok(()),
                    Err(e) => last_error = e.to_string(),
                }
            }
            sleep(POLL_INTERVAL);
        }
        Err(format!(
            "server not ready after {START_TIMEOUT:?} ({last_error}):\n{}",
            self.log_of_run()
        ))
    }

    /// SIGTERM, then SIGKILL after a timeout; returns how the process ended.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// kill -9: the crash a test wants to survive.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Stops (SIGTERM) and starts again on the same data directory and port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        if let Err(e) = self.wait_ready() {
            panic!("restart: {e}");
        }
    }

    /// What the current (or last) run has printed.
    pub fn log_of_run(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.seek(SeekFrom::Start(self.run_offset));
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    /// True while the process is alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log_of_run();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            let kept = self.dir.take().map(tempfile::TempDir::keep);
            eprintln!("--- dialogs server log (dir kept: {kept:?}) ---\n{tail}\n---");
        }
    }
}
