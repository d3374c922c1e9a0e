//! Starting and stopping the servers under test: a Tarantool running the
//! product's init.lua plus bench/lua/bench.lua, and a throw-away PostgreSQL
//! cluster. Both listen on 127.0.0.1 on a free port, live in a temporary
//! directory, and are stopped by the PID this program started (also on Ctrl-C,
//! through `Cleanup`).

use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::model::Durability;

/// The Tarantool to run: `$TARANTOOL` (`make bench TARANTOOL=...` sets it), else
/// `tarantool` from PATH.
pub fn tarantool_binary() -> std::ffi::OsString {
    std::env::var_os("TARANTOOL")
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "tarantool".into())
}

/// How long a server may take to come up before the run is abandoned.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to stop after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A port on 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A fresh directory under the system temp dir, removed by `Drop` of its owner.
fn temp_dir(tag: &str) -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..1000u32 {
        let p = base.join(format!("dialogs-bench-{}-{tag}-{n}", std::process::id()));
        if fs::create_dir(&p).is_ok() {
            return Ok(p);
        }
    }
    bail!(
        "cannot create a temporary directory under {}",
        base.display()
    )
}

/// A random password for a throw-away server.
pub fn random_secret() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..24)
        .map(|_| char::from(b"abcdefghijkmnpqrstuvwxyz23456789"[rng.gen_range(0..32)]))
        .collect()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory preconditions; pid is a process we started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Every server still running, so that Ctrl-C can stop them before exiting.
#[derive(Clone, Default)]
pub struct Cleanup(Arc<Mutex<Vec<(u32, String)>>>);

impl Cleanup {
    fn add(&self, pid: u32, what: &str) {
        if let Ok(mut v) = self.0.lock() {
            v.push((pid, what.to_owned()));
        }
    }

    fn remove(&self, pid: u32) {
        if let Ok(mut v) = self.0.lock() {
            v.retain(|(p, _)| *p != pid);
        }
    }

    /// SIGTERM to every server still registered, then wait a little for them.
    pub fn stop_all(&self) {
        let pids: Vec<(u32, String)> = self.0.lock().map(|v| v.clone()).unwrap_or_default();
        for (pid, what) in &pids {
            eprintln!("stopping {what} (pid {pid})");
            signal(*pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline && pids.iter().any(|(p, _)| alive(*p)) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A running Tarantool with the product and the benchmark's additions.
pub struct Tarantool {
    child: Child,
    dir: PathBuf,
    pub port: u16,
    /// The product's application user (`native` target).
    pub user: String,
    pub password: String,
    /// The benchmark's own user (`lua`, `raw`, `noop` targets and helpers).
    pub bench_user: String,
    pub bench_password: String,
    cleanup: Cleanup,
}

/// What the benchmark's Tarantool needs to start.
pub struct TarantoolConfig<'a> {
    /// This repository: bench/lua/ (the benchmark's own additions).
    pub repo: &'a Path,
    /// The product's build under test: its init.lua's directory and its module.
    pub product: &'a Path,
    pub lib_dir: &'a Path,
    pub durability: Durability,
    pub memtx_bytes: u64,
}

impl Tarantool {
    pub fn start(cfg: &TarantoolConfig<'_>, cleanup: &Cleanup) -> Result<Tarantool> {
        let script = cfg.repo.join("bench/lua/bench.lua");
        if !script.exists() {
            bail!("{} not found (--repo?)", script.display());
        }
        for so in ["new_dialog.so", "get_dialog.so"] {
            if !cfg.lib_dir.join(so).exists() {
                bail!(
                    "{} not found: run `make build` first",
                    cfg.lib_dir.join(so).display()
                );
            }
        }
        let dir = temp_dir("tarantool")?;
        let port = free_port()?;
        let password = random_secret();
        let bench_password = random_secret();
        let log = dir.join("tarantool.log");
        let out = fs::File::create(&log)?;
        let wal_mode = match cfg.durability {
            Durability::Write => "write",
            Durability::Fsync => "fsync",
        };
        let child = Command::new(tarantool_binary())
            .arg(&script)
            .current_dir(&dir)
            .env("DIALOGS_LISTEN", format!("127.0.0.1:{port}"))
            .env("DIALOGS_DATA_DIR", dir.join("data"))
            .env("DIALOGS_LIB_DIR", cfg.lib_dir)
            .env("DIALOGS_PASSWORD", &password)
            .env("DIALOGS_MEMTX_MEMORY", cfg.memtx_bytes.to_string())
            .env("DIALOGS_WAL_MODE", wal_mode)
            .env("DIALOGS_BENCH_INIT", cfg.product.join("init.lua"))
            .env("DIALOGS_BENCH_USER", "dialogs_bench")
            .env("DIALOGS_BENCH_PASSWORD", &bench_password)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting tarantool (is it installed? `make deps-tarantool`)")?;
        cleanup.add(child.id(), "tarantool");
        let mut t = Tarantool {
            child,
            dir,
            port,
            user: "dialogs".into(),
            password,
            bench_user: "dialogs_bench".into(),
            bench_password,
            cleanup: cleanup.clone(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = t.child.try_wait()? {
                bail!("tarantool exited at start ({status}):\n{}", tail(&log, 20));
            }
            if tail(&log, 5).contains("dialogs bench: baseline and bench user ready")
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                return Ok(t);
            }
            if Instant::now() > deadline {
                bail!("tarantool did not start in time:\n{}", tail(&log, 20));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_tail(&self) -> String {
        tail(&self.dir.join("tarantool.log"), 20)
    }
}

impl Drop for Tarantool {
    fn drop(&mut self) {
        let pid = self.child.id();
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.cleanup.remove(pid);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Why the `sharded` target cannot run here (vshard not loadable), or None.
pub fn vshard_missing(vshard_dir: Option<&Path>) -> Option<String> {
    let probe = "local dir = os.getenv('VSHARD_DIR') \
        if dir ~= nil and dir ~= '' then \
        package.path = dir .. '/?.lua;' .. dir .. '/?/init.lua;' .. package.path end \
        os.exit(pcall(require, 'vshard') and 0 or 1)";
    let mut cmd = Command::new(tarantool_binary());
    cmd.args(["-e", probe]).stdin(Stdio::null());
    if let Some(v) = vshard_dir {
        cmd.env("VSHARD_DIR", v);
    }
    match cmd.output() {
        Ok(o) if o.status.success() => None,
        Ok(_) => Some(
            "skipped: vshard not found (set VSHARD_DIR, or install it: tt rocks install vshard)"
                .into(),
        ),
        Err(e) => Some(format!("skipped: cannot run tarantool: {e}")),
    }
}

/// What a sharded cluster of the product needs to start.
pub struct ShardedConfig<'a> {
    /// This repository: bench/lua/storage.lua wraps each storage's init.lua.
    pub repo: &'a Path,
    /// The product's build under test: its init.lua's directory and its module.
    pub product: &'a Path,
    pub lib_dir: &'a Path,
    /// A checkout of vshard (VSHARD_DIR), or None when it is on the Lua path.
    pub vshard_dir: Option<&'a Path>,
    /// Storage replica sets, a master each.
    pub storages: usize,
    pub memtx_bytes: u64,
}

/// Log lines: a storage serves and has the benchmark's helper
/// (bench/lua/storage.lua); the router (init.lua) knows every bucket.
const STORAGE_READY: &str = "dialogs bench: storage helpers ready";
const ROUTER_READY: &str = "dialogs: the cluster's buckets are in place";

/// A sharded store (docs/sharding.md, "Cost: `make bench`, target `sharded`"): storage replica
/// sets of one master each and one router, all the product's init.lua, on
/// 127.0.0.1. Clients call the router as the application user.
pub struct ShardedCluster {
    children: Vec<Child>,
    dir: PathBuf,
    pub router_port: u16,
    pub user: String,
    pub password: String,
    /// The storages' addresses, and the benchmark's user on them (its helper
    /// only: `bench_outbox_len`).
    pub storage_addrs: Vec<String>,
    pub bench_user: String,
    pub bench_password: String,
    cleanup: Cleanup,
}

impl ShardedCluster {
    pub fn start(cfg: &ShardedConfig<'_>, cleanup: &Cleanup) -> Result<ShardedCluster> {
        let dir = temp_dir("sharded")?;
        let ports = (0..cfg.storages)
            .map(|_| free_port())
            .collect::<Result<Vec<_>>>()?;
        let topology = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("s{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(";");
        let mut c = ShardedCluster {
            children: Vec::new(),
            dir,
            router_port: free_port()?,
            user: "dialogs".into(),
            password: random_secret(),
            storage_addrs: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            bench_user: "dialogs_bench".into(),
            bench_password: random_secret(),
            cleanup: cleanup.clone(),
        };
        let replication_password = random_secret();
        let spawn = |c: &mut ShardedCluster, name: &str, port: u16, router: bool| -> Result<()> {
            let data = c.dir.join(name);
            fs::create_dir_all(&data)?;
            let out = fs::File::create(c.dir.join(format!("{name}.log")))?;
            let mut cmd = Command::new(tarantool_binary());
            if router {
                cmd.arg(cfg.product.join("init.lua"));
            } else {
                cmd.arg(cfg.repo.join("bench/lua/storage.lua"))
                    .env("DIALOGS_BENCH_INIT", cfg.product.join("init.lua"))
                    .env("DIALOGS_BENCH_USER", &c.bench_user)
                    .env("DIALOGS_BENCH_PASSWORD", &c.bench_password);
            }
            cmd.current_dir(&data)
                .env("DIALOGS_LISTEN", format!("127.0.0.1:{port}"))
                .env("DIALOGS_DATA_DIR", &data)
                .env("DIALOGS_LIB_DIR", cfg.lib_dir)
                .env("DIALOGS_MEMTX_MEMORY", cfg.memtx_bytes.to_string())
                .env("DIALOGS_WAL_MODE", "write")
                .env("DIALOGS_SHARDING", &topology)
                .env("DIALOGS_REPLICATION_PASSWORD", &replication_password)
                .env("DIALOGS_PASSWORD", &c.password)
                .env("DIALOGS_ROUTER", if router { "true" } else { "false" })
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            if let Some(v) = cfg.vshard_dir {
                cmd.env("VSHARD_DIR", v);
            }
            let child = cmd.spawn().context("starting tarantool")?;
            cleanup.add(child.id(), name);
            c.children.push(child);
            Ok(())
        };
        for (i, &port) in ports.iter().enumerate() {
            spawn(&mut c, &format!("s{}", i + 1), port, false)?;
        }
        for i in 0..cfg.storages {
            c.wait_log(i, &format!("s{}", i + 1), STORAGE_READY)?;
        }
        let router_port = c.router_port;
        spawn(&mut c, "router", router_port, true)?;
        c.wait_log(cfg.storages, "router", ROUTER_READY)?;
        Ok(c)
    }

    /// Until `name`'s log has `line`; an error with its log if it exits first.
    fn wait_log(&mut self, child: usize, name: &str, line: &str) -> Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.children[child].try_wait()? {
                bail!("{name} exited at start ({status}):\n{}", tail(&log, 20));
            }
            if fs::read_to_string(&log).unwrap_or_default().contains(line) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name} did not start in time:\n{}", tail(&log, 20));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every process of the cluster, the router last.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    pub fn router_pid(&self) -> u32 {
        self.children.last().map(Child::id).unwrap_or(0)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.router_port)
    }

    pub fn log_tail(&self) -> String {
        tail(&self.dir.join("router.log"), 20)
    }
}

impl Drop for ShardedCluster {
    fn drop(&mut self) {
        // The router first, so that it does not log every storage going away.
        for child in self.children.iter_mut().rev() {
            let pid = child.id();
            signal(pid, libc::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
            self.cleanup.remove(pid);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A throw-away PostgreSQL cluster on 127.0.0.1.
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    /// Run the server's tools as this user (PostgreSQL refuses to run as root).
    run_as: Option<String>,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub postmaster: u32,
    pub version: String,
    cleanup: Cleanup,
}

/// The newest PostgreSQL server binaries installed (Debian keeps them under
/// /usr/lib/postgresql/<major>/bin), or the directory of `initdb` on PATH.
fn postgres_bin() -> Result<PathBuf> {
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(dir) = fs::read_dir("/usr/lib/postgresql") {
        for e in dir.flatten() {
            let major = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok());
            let bin = e.path().join("bin");
            if let Some(m) = major {
                if bin.join("initdb").exists() && best.as_ref().is_none_or(|(b, _)| m > *b) {
                    best = Some((m, bin));
                }
            }
        }
    }
    if let Some((_, bin)) = best {
        return Ok(bin);
    }
    let out = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if path.is_empty() {
        bail!("PostgreSQL is not installed: `make deps-postgres` (apt-get install postgresql)");
    }
    let exe = PathBuf::from(&path);
    Ok(exe
        .parent()
        .ok_or_else(|| anyhow!("initdb at {path}"))?
        .to_owned())
}

impl Postgres {
    pub fn start(max_connections: usize, cleanup: &Cleanup) -> Result<Postgres> {
        let bin = postgres_bin()?;
        let dir = temp_dir("postgres")?;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = root.then(|| "postgres".to_owned());
        let password = random_secret();
        let pwfile = dir.join("pw");
        {
            let mut f = fs::File::create(&pwfile)?;
            writeln!(f, "{password}")?;
        }
        fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))?;
        if let Some(user) = &run_as {
            let status = Command::new("chown")
                .args(["-R", user])
                .arg(&dir)
                .status()?;
            if !status.success() {
                bail!(
                    "chown {user} {} failed (no `postgres` user? install postgresql)",
                    dir.display()
                );
            }
        }
        let port = free_port()?;
        let mut pg = Postgres {
            dir,
            bin,
            run_as,
            port,
            user: "bench".into(),
            password,
            postmaster: 0,
            version: String::new(),
            cleanup: cleanup.clone(),
        };
        let data = pg.dir.join("data");
        pg.tool("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "bench",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .run_quiet()?;
        // Appended as the file's owner keeps it: the open does not change it.
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        writeln!(
            conf,
            "\n# dialogs bench\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{}'\nmax_connections = {max_connections}\n\
             shared_buffers = 512MB\nmax_wal_size = 4GB\nlogging_collector = off",
            pg.dir.display()
        )?;
        drop(conf);
        pg.tool("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(pg.dir.join("postgres.log"))
            .args(["-w", "-t", "60", "start"])
            .run_quiet()
            .with_context(|| tail(&pg.dir.join("postgres.log"), 20))?;
        let pidfile = fs::read_to_string(data.join("postmaster.pid"))?;
        pg.postmaster = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| anyhow!("no pid in postmaster.pid"))?;
        cleanup.add(pg.postmaster, "postgres");
        let out = Command::new(pg.bin.join("postgres"))
            .arg("--version")
            .output()?;
        pg.version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok(pg)
    }

    fn tool(&self, name: &str) -> Command {
        let exe = self.bin.join(name);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    /// A tokio-postgres connection string.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname=postgres",
            self.port, self.user, self.password
        )
    }
}

trait RunQuiet {
    fn run_quiet(&mut self) -> Result<()>;
}

impl RunQuiet for Command {
    fn run_quiet(&mut self) -> Result<()> {
        let out = self.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!(
                "{:?} failed: {}\n{}",
                self,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.postmaster != 0 {
            let data = self.dir.join("data");
            let stopped = self
                .tool("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-m", "fast", "-w", "-t", "30", "stop"])
                .run_quiet();
            if stopped.is_err() && alive(self.postmaster) {
                signal(self.postmaster, libc::SIGQUIT);
            }
            self.cleanup.remove(self.postmaster);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
