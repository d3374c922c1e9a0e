//! The benchmark's vocabulary: targets, workloads, modes, and one cell's result.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What serves the requests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The native procedures `new_dialog` / `get_dialog`.
    Native,
    /// The report's Lua functions, corrected (`bench/lua/baseline.lua`).
    Lua,
    /// Plain IPROTO INSERT / SELECT on the product's space: no procedure at all.
    Raw,
    /// An empty Lua function: the round-trip floor.
    Noop,
    /// PostgreSQL from Debian, same columns and indexes.
    Pg,
    /// The native procedures through a vshard router to two storages (docs/sharding.md,
    /// "How a call travels"): client -> router -> storage.
    Sharded,
    /// `native`'s requests to a second single store running an earlier build of
    /// the product (`--base-repo`, `--base-lib-dir`): the "before" of an A/B
    /// comparison, measured in the same run, cell by cell beside `native`.
    Base,
    /// `sharded`'s requests to a second sharded cluster of that earlier build.
    ShardedBase,
}

impl Target {
    /// The targets of the main run (one single store, PostgreSQL, and the
    /// earlier build's single store when one is given).
    pub const LOAD: [Target; 6] = [
        Target::Native,
        Target::Base,
        Target::Lua,
        Target::Raw,
        Target::Pg,
        Target::Noop,
    ];
    /// Every target, in the order tables list them.
    pub const ALL: [Target; 8] = [
        Target::Native,
        Target::Base,
        Target::Sharded,
        Target::ShardedBase,
        Target::Lua,
        Target::Raw,
        Target::Pg,
        Target::Noop,
    ];

    /// Whether this target has a request for `w`: the inbox's calls exist only in
    /// the product's current build (native, sharded); `list` also has its plain
    /// SELECT floor (`raw`); `mark` is a transaction of several steps with no
    /// single-request equivalent, and neither call has a Lua or PostgreSQL twin.
    pub fn serves(self, w: Workload) -> bool {
        match w {
            Workload::List => matches!(self, Target::Native | Target::Sharded | Target::Raw),
            Workload::Mark => matches!(self, Target::Native | Target::Sharded),
            _ => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::Native => "native",
            Target::Lua => "lua",
            Target::Raw => "raw",
            Target::Noop => "noop",
            Target::Pg => "pg",
            Target::Sharded => "sharded",
            Target::Base => "base",
            Target::ShardedBase => "sharded-base",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What each request does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// One new message between a random pair of users.
    Write,
    /// A whole 20-message dialog, chosen at random.
    Read,
    /// The newest 50 messages of a long dialog.
    Page,
    /// 90% `read`, 10% `write`.
    Mixed,
    /// `list_dialogs` of 20 entries for a user with more dialogs than that.
    List,
    /// `mark_read` of a dialog that received a new message, up to that message,
    /// on entries a seeding step made unread just before the cell.
    Mark,
}

impl Workload {
    pub const ALL: [Workload; 6] = [
        Workload::Write,
        Workload::Read,
        Workload::Page,
        Workload::Mixed,
        Workload::List,
        Workload::Mark,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Write => "write",
            Workload::Read => "read",
            Workload::Page => "page",
            Workload::Mixed => "mixed",
            Workload::List => "list",
            Workload::Mark => "mark",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the concurrency C is spread over connections.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// C connections, one request outstanding on each (the report's "threads").
    Conns,
    /// One connection with C requests in flight.
    Pipelined,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Conns => "conns",
            Mode::Pipelined => "pipelined",
        }
    }
}

/// What a successful write survives.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Tarantool `wal_mode=write`, PostgreSQL `synchronous_commit=off`: a process
    /// crash loses nothing, an OS crash may lose the last writes.
    Write,
    /// Tarantool `wal_mode=fsync`, PostgreSQL `synchronous_commit=on`.
    Fsync,
}

/// One cell of the matrix.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Cell {
    pub target: Target,
    pub workload: Workload,
    pub mode: Mode,
    pub durability: Durability,
    pub concurrency: usize,
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} C={} {}{}",
            self.workload,
            self.target,
            self.concurrency,
            self.mode.name(),
            if self.durability == Durability::Fsync {
                " fsync"
            } else {
                ""
            }
        )
    }
}

/// What one cell measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellResult {
    #[serde(flatten)]
    pub cell: Cell,
    /// Requests completed in the measured window.
    pub ops: u64,
    /// Failed requests, warm-up included: refused, timed out, or a wrong answer.
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// CPU time of the server's processes per completed request, microseconds.
    pub server_cpu_us: f64,
    /// CPU time of this load generator per completed request, microseconds.
    pub client_cpu_us: f64,
    /// Of `server_cpu_us`, the router's share (the `sharded` target only).
    #[serde(default)]
    pub router_cpu_us: Option<f64>,
    /// A sharded cell: how long its storages took, once its last request was
    /// answered, to deliver every outbox row left (load::Settle), milliseconds.
    #[serde(default)]
    pub drain_ms: Option<f64>,
}
