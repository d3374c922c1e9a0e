//! `dialogs-bench`: the native procedures against the report's Lua functions,
//! plain IPROTO requests, an empty call and PostgreSQL, in one run on one
//! machine. Writes bench/results/tarantool-<version>.{md,json,svg}, one set per
//! server version (report::stem_of). See docs/benchmarks.md.

mod chart;
mod cpu;
mod data;
mod load;
mod model;
mod pg;
mod report;
mod servers;
mod tt;

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusty_tarantool::tarantool::Client as TtClient;

use cpu::CpuSource;
use data::{Dataset, MarkOp, Msg};
use load::{Conn, ServerCpu, Settle, Timing};
use model::{Cell, CellResult, Durability, Mode, Target, Workload};
use report::{InboxMemory, Micro, Report, TtMemory};
use servers::{Cleanup, Postgres, ShardedCluster, ShardedConfig, Tarantool, TarantoolConfig};

/// Memtx arena for the benchmark's Tarantool: the write cells store millions of
/// messages and the memory test another million.
const MEMTX_BYTES: u64 = 8 << 30;
/// PostgreSQL connections: the largest C plus a few for setup.
const PG_SPARE_CONNECTIONS: usize = 20;
/// Connections opened at once while building a pool.
const CONNECT_BATCH: usize = 50;
/// Storage replica sets (a master each) of the `sharded` target's cluster.
const SHARDED_STORAGES: usize = 2;
/// Calls in flight while filling the sharded cluster through its router.
const FILL_IN_FLIGHT: usize = 64;
/// A `mark` cell's seeding step stores this many times as many messages as the
/// fastest rate its target has run at (`write` or `mark`, any C) would use in
/// the cell's warm-up and measured window: each request uses one up.
const MARK_SEED_MARGIN: f64 = 2.0;
/// The least rate assumed, requests per second (also before a target has run
/// any cell).
const MARK_RATE_GUESS: f64 = 60_000.0;

#[derive(Parser, Debug)]
#[command(about = "Benchmark: native procedures vs Lua vs raw IPROTO vs PostgreSQL")]
struct Args {
    /// A quick run of every target and workload (about a second each), for CI.
    #[arg(long)]
    smoke: bool,
    /// The repository root (init.lua, bench/lua/).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Where new_dialog.so and get_dialog.so are.
    #[arg(long, default_value = "target/dialogs")]
    lib_dir: PathBuf,
    /// Where tarantool-<version>.md, .json and .svg go (the version the server reports).
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Measured seconds per cell.
    #[arg(long)]
    seconds: Option<f64>,
    /// Warm-up seconds per cell.
    #[arg(long)]
    warmup: Option<f64>,
    /// Connection counts of the `conns` mode, comma-separated.
    #[arg(long, value_delimiter = ',')]
    conns: Option<Vec<usize>>,
    /// Requests in flight of the `pipelined` mode, comma-separated (0: none).
    #[arg(long, value_delimiter = ',')]
    pipelined: Option<Vec<usize>>,
    /// Only these targets (native, sharded, lua, raw, noop, pg), comma-separated.
    #[arg(long, value_delimiter = ',')]
    targets: Option<Vec<String>>,
    /// Only these workloads (write, read, page, mixed), comma-separated.
    #[arg(long, value_delimiter = ',')]
    workloads: Option<Vec<String>>,
    /// Skip the durable (fsync) comparison.
    #[arg(long)]
    no_durable: bool,
    /// Skip PostgreSQL (for a machine without it).
    #[arg(long)]
    no_pg: bool,
    /// Skip the in-process micro-benchmark and the memory measurement (for a
    /// slice of the matrix).
    #[arg(long)]
    cells_only: bool,
    /// Only redraw the .md and .svg of every tarantool-*.json in --out.
    #[arg(long)]
    replot: bool,
    /// Run the main cells this many times, round after round (an A/B comparison
    /// on a noisy machine); the report's single figures take, for each cell, the
    /// round with the median server CPU per call.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// A checkout of vshard for the `sharded` target (default: $VSHARD_DIR, else
    /// vshard on the Lua path; without vshard the target is skipped).
    #[arg(long)]
    vshard_dir: Option<PathBuf>,
    /// An earlier build of the product to compare against in the same run: the
    /// directory of its init.lua (a checkout, outside this repository). Adds the
    /// targets `base` (its single store) and `sharded-base` (its sharded
    /// cluster), measured cell by cell beside `native` and `sharded`.
    #[arg(long)]
    base_repo: Option<PathBuf>,
    /// That build's module directory (default: <base-repo>/target/dialogs).
    #[arg(long)]
    base_lib_dir: Option<PathBuf>,
}

/// Sizes of one run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub smoke: bool,
    pub seconds: f64,
    pub warmup: f64,
    pub conns: Vec<usize>,
    pub pipelined: Vec<usize>,
    /// C values of the durable (fsync) comparison.
    pub durable_conns: Vec<usize>,
    pub read_dialogs: usize,
    pub page_dialog_len: usize,
    pub micro_calls: usize,
    pub memory_messages: usize,
    pub client_threads: usize,
    /// Users `list` asks for (each in data::LIST_DIALOGS_PER_USER dialogs).
    #[serde(default)]
    pub list_users: usize,
    /// Dialogs `mark` seeds and reads, round-robin.
    #[serde(default)]
    pub mark_dialogs: usize,
    /// New dialogs of the inbox's memory measurement (two entries each).
    #[serde(default)]
    pub inbox_memory_dialogs: usize,
}

impl Plan {
    fn from_args(a: &Args) -> Plan {
        let (seconds, warmup, conns, pipelined, durable, read, page, micro, mem) = if a.smoke {
            (
                0.7,
                0.3,
                vec![10],
                vec![50],
                vec![10],
                100,
                2_000,
                2_000,
                10_000,
            )
        } else {
            (
                2.0,
                0.5,
                vec![10, 50, 200, 1000],
                vec![50, 1000],
                vec![10, 50, 200, 1000],
                1_000,
                100_000,
                100_000,
                1_000_000,
            )
        };
        let conns = a.conns.clone().unwrap_or(conns);
        let (list_users, mark_dialogs, inbox_memory_dialogs) = if a.smoke {
            (50, 150_000, 5_000)
        } else {
            (1_000, 400_000, 100_000)
        };
        Plan {
            list_users,
            mark_dialogs,
            inbox_memory_dialogs,
            smoke: a.smoke,
            seconds: a.seconds.unwrap_or(seconds),
            warmup: a.warmup.unwrap_or(warmup),
            durable_conns: if a.conns.is_some() {
                conns.clone()
            } else {
                durable
            },
            conns,
            pipelined: a
                .pipelined
                .clone()
                .unwrap_or(pipelined)
                .into_iter()
                .filter(|&c| c > 0)
                .collect(),
            read_dialogs: read,
            page_dialog_len: page,
            micro_calls: micro,
            memory_messages: mem,
            client_threads: a.client_threads,
        }
    }

    fn timing(&self) -> Timing {
        Timing {
            warmup: Duration::from_secs_f64(self.warmup),
            measure: Duration::from_secs_f64(self.seconds),
        }
    }

    fn max_c(&self) -> usize {
        self.conns
            .iter()
            .chain(&self.durable_conns)
            .copied()
            .max()
            .unwrap_or(1)
    }
}

/// The cells of the main run (wal_mode=write, synchronous_commit=off). `noop`
/// does the same empty call whatever the workload, so it runs once per C and
/// mode (filed under `read`); a target runs only the workloads it serves, and
/// `base` only when an earlier build is given.
fn main_cells(plan: &Plan, pg: bool, base: bool) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (mode, cs) in [
        (Mode::Conns, &plan.conns),
        (Mode::Pipelined, &plan.pipelined),
    ] {
        for workload in Workload::ALL {
            for &c in cs.iter() {
                for target in Target::LOAD {
                    if (target == Target::Pg && !pg)
                        || (target == Target::Base && !base)
                        || (target == Target::Noop && workload != Workload::Read)
                        || !target.serves(workload)
                    {
                        continue;
                    }
                    cells.push(Cell {
                        target,
                        workload,
                        mode,
                        durability: Durability::Write,
                        concurrency: c,
                    });
                }
            }
        }
    }
    cells
}

/// The `sharded` target (and `sharded-base` with an earlier build): every
/// workload and C of the main run it serves, through a router.
fn sharded_cells(plan: &Plan, base: bool) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (mode, cs) in [
        (Mode::Conns, &plan.conns),
        (Mode::Pipelined, &plan.pipelined),
    ] {
        for workload in Workload::ALL {
            for &concurrency in cs.iter() {
                for target in [Target::Sharded, Target::ShardedBase] {
                    if (target == Target::ShardedBase && !base) || !target.serves(workload) {
                        continue;
                    }
                    cells.push(Cell {
                        target,
                        workload,
                        mode,
                        durability: Durability::Write,
                        concurrency,
                    });
                }
            }
        }
    }
    cells
}

/// The durable comparison: writes and the mixed load, native on wal_mode=fsync
/// against PostgreSQL with synchronous_commit=on.
fn durable_cells(plan: &Plan, pg: bool) -> Vec<Cell> {
    let mut cells = Vec::new();
    for workload in [Workload::Write, Workload::Mixed] {
        for &c in &plan.durable_conns {
            for target in [Target::Native, Target::Pg] {
                if target == Target::Pg && !pg {
                    continue;
                }
                cells.push(Cell {
                    target,
                    workload,
                    mode: Mode::Conns,
                    durability: Durability::Fsync,
                    concurrency: c,
                });
            }
        }
    }
    cells
}

/// Opens `n` Tarantool connections and checks each with one call of `probe`.
async fn tt_pool(
    addr: &str,
    user: &str,
    password: &str,
    n: usize,
    probe: (&str, rmpv::Value),
) -> Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(CONNECT_BATCH) {
        let mut batch = Vec::new();
        for _ in chunk {
            let c = tt::client(addr, user, password, false);
            let (function, args) = (probe.0.to_owned(), probe.1.clone());
            batch.push(tokio::spawn(async move {
                // The connection opens on the first request.
                tt::call_value(&c, &function, args).await.map(|_| c)
            }));
        }
        for b in batch {
            conns.push(Conn::Tarantool(b.await??));
        }
    }
    Ok(conns)
}

/// The probe of a native connection: a one-message page of a read dialog.
fn native_probe(ds: &Dataset) -> (&'static str, rmpv::Value) {
    let opts = rmpv::Value::Map(vec![(rmpv::Value::from("limit"), rmpv::Value::from(1))]);
    (
        "get_dialog",
        rmpv::Value::Array(vec![
            rmpv::Value::from(ds.read_dialog_strs[0].as_str()),
            opts,
        ]),
    )
}

/// The probe of a bench-user connection: the empty call.
fn noop_probe() -> (&'static str, rmpv::Value) {
    ("bench_noop", rmpv::Value::Array(vec![]))
}

/// Opens `n` PostgreSQL connections, each with `durability` set.
async fn pg_pool(pg: &Postgres, n: usize, durability: Durability) -> Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    let info = pg.conninfo();
    for chunk in (0..n).collect::<Vec<_>>().chunks(CONNECT_BATCH) {
        let mut batch = Vec::new();
        for _ in chunk {
            let info = info.clone();
            batch.push(tokio::spawn(async move {
                let c = pg::connect(&info).await?;
                pg::set_durability(&c, durability).await?;
                anyhow::Ok(c)
            }));
        }
        for b in batch {
            conns.push(Conn::Postgres(b.await??));
        }
    }
    Ok(conns)
}

/// The progress line on stderr: cells done of the total, each cell's figures,
/// and the time the rest should take.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
}

impl Progress {
    fn label(&self, cell: &Cell) -> String {
        format!(
            "[{:>3}/{}] {:<34}",
            self.done + 1,
            self.total,
            cell.to_string()
        )
    }

    fn finish(&mut self, r: &CellResult) {
        self.done += 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = elapsed / self.done as f64 * (self.total - self.done) as f64;
        eprintln!(
            "\r[{:>3}/{}] {:<34} {:>9.0} ops/s  p99 {:>7.2} ms  server {:>6.1} us/call  errors {}{}  (eta {:.0}s)",
            self.done,
            self.total,
            r.cell.to_string(),
            r.ops_per_sec,
            r.p99_ms,
            r.server_cpu_us,
            r.errors,
            r.first_error
                .as_deref()
                .map(|e| format!(" [{}]", e.chars().take(120).collect::<String>()))
                .unwrap_or_default(),
            eta
        );
    }
}

/// Everything the run needs to hand a cell its connections.
#[derive(Default)]
struct Pools {
    native: Vec<Conn>,
    bench: Vec<Conn>,
    pg: Vec<Conn>,
    sharded: Vec<Conn>,
    base: Vec<Conn>,
    sharded_base: Vec<Conn>,
}

impl Pools {
    fn for_target(&self, t: Target) -> &[Conn] {
        match t {
            Target::Native => &self.native,
            Target::Sharded => &self.sharded,
            Target::Lua | Target::Raw | Target::Noop => &self.bench,
            Target::Pg => &self.pg,
            Target::Base => &self.base,
            Target::ShardedBase => &self.sharded_base,
        }
    }
}

/// The server behind a target: the CPU its cells sample, how a `mark` cell
/// stores the messages it reads, and, for a sharded cluster, its storages'
/// outboxes, which each cell waits to see empty (load::Settle).
struct Endpoint {
    cpu: CpuSource,
    router_cpu: Option<CpuSource>,
    /// The single store's benchmark user (bench/lua/bench.lua's helpers).
    admin: Option<TtClient>,
    /// Otherwise the cluster's router, to store through new_dialog.
    router: Option<TtClient>,
    /// The benchmark's user on each storage (bench/lua/storage.lua).
    storages: Vec<TtClient>,
}

impl Endpoint {
    fn of_cpu(cpu: CpuSource) -> Endpoint {
        Endpoint {
            cpu,
            router_cpu: None,
            admin: None,
            router: None,
            storages: Vec::new(),
        }
    }
}

/// The endpoint a target's cells use: `lua`, `raw` and `noop` are served by
/// `native`'s server.
fn endpoint_key(t: Target) -> Target {
    match t {
        Target::Lua | Target::Raw | Target::Noop => Target::Native,
        other => other,
    }
}

/// The workloads of the inbox's calls, which a build before the inbox cannot serve.
fn is_inbox_workload(w: Workload) -> bool {
    matches!(w, Workload::List | Workload::Mark)
}

/// The earlier build to compare against (--base-repo): its init.lua directory and
/// its module directory (--base-lib-dir, or the usual one of its build).
fn base_paths(args: &Args) -> Result<Option<(PathBuf, PathBuf)>> {
    let Some(repo) = &args.base_repo else {
        if args.base_lib_dir.is_some() {
            bail!("--base-lib-dir needs --base-repo (the init.lua of that build)");
        }
        return Ok(None);
    };
    let repo = repo.canonicalize().context("--base-repo")?;
    let lib = args
        .base_lib_dir
        .clone()
        .unwrap_or_else(|| repo.join("target/dialogs"));
    let lib = lib.canonicalize().context("--base-lib-dir")?;
    Ok(Some((repo, lib)))
}

/// The cells a run measures, each list repeated round after round, and why the
/// sharded ones do not run when they do not.
struct Schedule {
    main: Vec<Cell>,
    sharded: Vec<Cell>,
    durable: Vec<Cell>,
    sharded_skip: Option<String>,
    /// Where vshard is, for the sharded cluster (None: on the Lua path).
    vshard_dir: Option<PathBuf>,
}

impl Schedule {
    /// Which cells run: the main, sharded and durable matrices, less what
    /// --targets, --workloads, --no-pg and --no-durable leave out, the main and
    /// sharded ones --rounds times; the sharded ones not at all without vshard.
    fn new(args: &Args, plan: &Plan) -> Schedule {
        let use_pg = !args.no_pg;
        let wanted = |c: &Cell| {
            args.targets
                .as_ref()
                .is_none_or(|t| t.iter().any(|t| t == c.target.name()))
                && args
                    .workloads
                    .as_ref()
                    .is_none_or(|w| w.iter().any(|w| w == c.workload.name()))
        };
        let base = args.base_repo.is_some();
        let one_round: Vec<Cell> = main_cells(plan, use_pg, base)
            .into_iter()
            .filter(wanted)
            .collect();
        let main: Vec<Cell> = (0..args.rounds.max(1))
            .flat_map(|_| one_round.iter().copied())
            .collect();
        // The sharded cells round after round too (their own cluster, after the main ones).
        let sharded_round: Vec<Cell> = sharded_cells(plan, base)
            .into_iter()
            .filter(wanted)
            .collect();
        let sharded: Vec<Cell> = (0..args.rounds.max(1))
            .flat_map(|_| sharded_round.iter().copied())
            .collect();
        let vshard_dir = args
            .vshard_dir
            .clone()
            .or_else(|| std::env::var_os("VSHARD_DIR").map(PathBuf::from))
            .filter(|d| !d.as_os_str().is_empty());
        let sharded_skip = if sharded.is_empty() {
            None
        } else {
            servers::vshard_missing(vshard_dir.as_deref())
        };
        let sharded = if sharded_skip.is_some() {
            Vec::new()
        } else {
            sharded
        };
        let durable: Vec<Cell> = if args.no_durable {
            Vec::new()
        } else {
            durable_cells(plan, use_pg)
                .into_iter()
                .filter(wanted)
                .collect()
        };
        Schedule {
            main,
            sharded,
            durable,
            sharded_skip,
            vshard_dir,
        }
    }

    fn len(&self) -> usize {
        self.main.len() + self.sharded.len() + self.durable.len()
    }

    fn has(&self, f: impl Fn(&Cell) -> bool) -> bool {
        self.main.iter().chain(&self.sharded).any(f)
    }
}

/// PostgreSQL with the data loaded, and the connection that loaded it (the
/// memory measurement's).
type LoadedPg = (Postgres, Arc<pg::PgConn>);

/// The main Tarantool (wal_mode=write) with the data loaded, and its admin
/// connection.
struct MainTarantool {
    tt: Tarantool,
    admin: TtClient,
    info: Arc<tt::ServerInfo>,
}

/// What the steps of one run share: its sizes, the server build, the data set,
/// the progress line and the report the cells fill.
struct Run<'a> {
    plan: Plan,
    repo: PathBuf,
    lib_dir: PathBuf,
    /// The earlier build's init.lua directory and module directory.
    base: Option<(PathBuf, PathBuf)>,
    /// Whether any `list` cell runs (its users' dialogs are stored then).
    list_wanted: bool,
    /// Whether any sharded cell reads the long dialog (`page`): it is stored
    /// through the router only then (on a single store always: the in-process
    /// measurements read it too).
    page_wanted: bool,
    ds: Arc<Dataset>,
    timing: Timing,
    cleanup: &'a Cleanup,
    progress: Progress,
    report: Report,
    /// The fastest rate each target ran a `write` or `mark` cell at: what the
    /// next `mark` cell's seeding step is sized by.
    peak_rate: HashMap<Target, f64>,
    /// Where in data::Dataset::mark_pool the next seeding step starts.
    mark_cursor: usize,
}

impl Run<'_> {
    /// Starts PostgreSQL (one cluster for the whole run; durability is a session
    /// setting) and loads the data set into it.
    async fn start_postgres(&mut self) -> Result<LoadedPg> {
        eprintln!("starting PostgreSQL");
        let pg = Postgres::start(self.plan.max_c() + PG_SPARE_CONNECTIONS, self.cleanup)?;
        pg::create_schema(&pg.conninfo()).await?;
        let setup = pg::connect(&pg.conninfo()).await?;
        pg::setup(&setup, &self.ds).await?;
        self.report.pg_version = Some(pg.version.clone());
        Ok((pg, setup))
    }

    /// Starts the main Tarantool (wal_mode=write) and loads the data set through
    /// the native procedure and through the report's Lua function.
    async fn start_tarantool(&mut self) -> Result<MainTarantool> {
        eprintln!("starting Tarantool (wal_mode=write) and loading data");
        let tt = Tarantool::start(
            &TarantoolConfig {
                repo: &self.repo,
                product: &self.repo,
                lib_dir: &self.lib_dir,
                durability: Durability::Write,
                memtx_bytes: MEMTX_BYTES,
            },
            self.cleanup,
        )?;
        let admin = tt::client(&tt.addr(), &tt.bench_user, &tt.bench_password, true);
        let info = Arc::new(tt::server_info(&admin).await?);
        self.report.tarantool_version = info.version.clone();
        tt::fill(&admin, "new_dialog", &self.ds, true)
            .await
            .with_context(|| tt.log_tail())?;
        tt::fill(&admin, "lua_new_dialog", &self.ds, true).await?;
        if self.list_wanted && info.inbox.is_some() {
            tt::fill_pairs(&admin, &self.ds.list_fill, &self.ds.text)
                .await
                .with_context(|| tt.log_tail())?;
        }
        Ok(MainTarantool { tt, admin, info })
    }

    /// Starts the earlier build's single store (wal_mode=write) with the data
    /// its workloads read; returns it, its endpoint and its connections.
    async fn start_base(
        &mut self,
        product: &Path,
        lib_dir: &Path,
    ) -> Result<(Tarantool, Endpoint, Vec<Conn>)> {
        eprintln!(
            "starting the earlier build's Tarantool ({}) and loading data",
            product.display()
        );
        let tt = Tarantool::start(
            &TarantoolConfig {
                repo: &self.repo,
                product,
                lib_dir,
                durability: Durability::Write,
                memtx_bytes: MEMTX_BYTES,
            },
            self.cleanup,
        )?;
        let admin = tt::client(&tt.addr(), &tt.bench_user, &tt.bench_password, true);
        tt::fill(&admin, "new_dialog", &self.ds, true)
            .await
            .with_context(|| tt.log_tail())?;
        let pool = tt_pool(
            &tt.addr(),
            &tt.user,
            &tt.password,
            self.plan.max_c().max(1),
            native_probe(&self.ds),
        )
        .await
        .with_context(|| tt.log_tail())?;
        let mut ep = Endpoint::of_cpu(CpuSource::Process(tt.pid()));
        ep.admin = Some(admin);
        Ok((tt, ep, pool))
    }

    /// The connections of the main cells: as many as the largest C, to the main
    /// Tarantool as the product's user (native) and as the bench's (the other
    /// targets), and to PostgreSQL.
    async fn main_pools(&self, main: &MainTarantool, pg: Option<&LoadedPg>) -> Result<Pools> {
        let tt = &main.tt;
        let max_c = self.plan.max_c().max(1);
        Ok(Pools {
            native: tt_pool(
                &tt.addr(),
                &tt.user,
                &tt.password,
                max_c,
                native_probe(&self.ds),
            )
            .await
            .with_context(|| tt.log_tail())?,
            bench: tt_pool(
                &tt.addr(),
                &tt.bench_user,
                &tt.bench_password,
                max_c,
                noop_probe(),
            )
            .await?,
            pg: match pg {
                Some((p, _)) => pg_pool(p, max_c, Durability::Write).await?,
                None => Vec::new(),
            },
            ..Pools::default()
        })
    }

    /// Measures `cells` one after another, each against its target's endpoint
    /// (its server's CPU; a `mark` cell after its seeding step), into the report.
    async fn run_cells(
        &mut self,
        cells: &[Cell],
        pools: &Pools,
        info: &Arc<tt::ServerInfo>,
        endpoints: &HashMap<Target, Endpoint>,
    ) {
        for cell in cells {
            let label = self.progress.label(cell);
            let Some(ep) = endpoints.get(&endpoint_key(cell.target)) else {
                continue;
            };
            let seeded = if cell.workload == Workload::Mark {
                self.seed_marks(cell, ep).await
            } else {
                Ok(())
            };
            let settle = (!ep.storages.is_empty()).then(|| Settle {
                storages: &ep.storages,
            });
            let mut r = load::run_cell(
                *cell,
                pools.for_target(cell.target),
                &self.ds,
                info,
                ServerCpu {
                    total: &ep.cpu,
                    router: ep.router_cpu.as_ref(),
                },
                settle.as_ref(),
                self.timing,
                &label,
            )
            .await;
            if let Err(e) = seeded {
                r.errors += 1;
                r.first_error = Some(format!("seeding the cell: {e:#}"));
            }
            if matches!(cell.workload, Workload::Write | Workload::Mark) {
                // Requests issued over warm-up and window, per second of load.
                let rate = if cell.workload == Workload::Mark {
                    self.ds.marks.taken() as f64 / (self.plan.warmup + self.plan.seconds)
                } else {
                    r.ops_per_sec
                };
                let peak = self.peak_rate.entry(cell.target).or_insert(0.0);
                *peak = peak.max(rate);
            }
            self.progress.finish(&r);
            self.report.cells.push(r);
        }
    }

    /// A `mark` cell's seeding step: one new message in each of the next dialogs
    /// of the pool (as many as the cell can use, `MARK_SEED_MARGIN`), stored on
    /// the cell's server; the cell then reads each up to that message.
    async fn seed_marks(&mut self, cell: &Cell, ep: &Endpoint) -> Result<()> {
        self.ds.marks.set(Vec::new());
        let pool = &self.ds.mark_pool;
        if pool.is_empty() {
            bail!("no dialogs to mark");
        }
        let rate = self
            .peak_rate
            .get(&cell.target)
            .copied()
            .unwrap_or(0.0)
            .max(MARK_RATE_GUESS);
        let n = ((rate * (self.plan.warmup + self.plan.seconds) * MARK_SEED_MARGIN) as usize
            + cell.concurrency)
            .min(pool.len());
        let msgs: Vec<Msg> = (0..n)
            .map(|k| pool[(self.mark_cursor + k) % pool.len()])
            .collect();
        self.mark_cursor = (self.mark_cursor + n) % pool.len();
        let ids = match (&ep.admin, &ep.router) {
            (Some(admin), _) => tt::fill_pairs(admin, &msgs, &self.ds.text).await?,
            (None, Some(router)) => {
                tt::fill_pairs_by_calls(router, &msgs, &self.ds.text, FILL_IN_FLIGHT).await?
            }
            (None, None) => bail!("{}: no server to store messages on", cell.target),
        };
        self.ds.marks.set(
            msgs.iter()
                .zip(ids)
                .map(|(m, up_to)| MarkOp {
                    user: m.to,
                    dialog: m.dialog,
                    up_to,
                })
                .collect(),
        );
        Ok(())
    }

    /// The in-process measurements on the main Tarantool: the micro-benchmark
    /// (each procedure called from Lua, no network), then the memory a million
    /// messages take there and in PostgreSQL.
    async fn in_process(
        &mut self,
        admin: &TtClient,
        pg: Option<&LoadedPg>,
        has_inbox: bool,
    ) -> Result<()> {
        eprintln!(
            "in-process micro-benchmark ({} calls each)",
            self.plan.micro_calls
        );
        let m = tt::micro(admin, &self.ds, self.plan.micro_calls).await?;
        self.report.micro = Some(Micro::from_value(&m)?);
        eprintln!(
            "memory: {} messages of {} characters",
            self.plan.memory_messages,
            data::TEXT_CHARS
        );
        let mem = tt::memory(admin, &self.ds, self.plan.memory_messages).await?;
        self.report.tt_memory = Some(TtMemory::from_value(&mem)?);
        if has_inbox {
            eprintln!(
                "memory of the inbox: {} new dialogs, two entries each",
                self.plan.inbox_memory_dialogs
            );
            let m = tt::inbox_memory(admin, &self.ds, self.plan.inbox_memory_dialogs).await?;
            self.report.inbox_memory = Some(InboxMemory::from_value(&m)?);
        }
        if let Some((_, setup)) = pg {
            self.report.pg_memory =
                Some(pg::memory(setup, &self.ds, self.plan.memory_messages).await?);
        }
        Ok(())
    }

    /// A sharded cluster of the build in `product` (router + storages), the
    /// same data loaded through its router (and the `list` users' dialogs with
    /// `list`); its endpoint and its connections.
    async fn start_cluster(
        &mut self,
        product: &Path,
        lib_dir: &Path,
        vshard_dir: Option<&Path>,
        list: bool,
    ) -> Result<(ShardedCluster, Endpoint, Vec<Conn>)> {
        eprintln!(
            "starting a sharded cluster of {} ({SHARDED_STORAGES} storages + 1 router) and \
             loading data through the router",
            product.display()
        );
        let cluster = ShardedCluster::start(
            &ShardedConfig {
                repo: &self.repo,
                product,
                lib_dir,
                vshard_dir,
                storages: SHARDED_STORAGES,
                memtx_bytes: MEMTX_BYTES / SHARDED_STORAGES as u64,
            },
            self.cleanup,
        )?;
        let loader = tt::client(&cluster.addr(), &cluster.user, &cluster.password, true);
        tt::fill_by_calls(&loader, &self.ds, FILL_IN_FLIGHT, self.page_wanted)
            .await
            .with_context(|| cluster.log_tail())?;
        if list {
            tt::fill_pairs_by_calls(&loader, &self.ds.list_fill, &self.ds.text, FILL_IN_FLIGHT)
                .await
                .with_context(|| cluster.log_tail())?;
        }
        let max_c = self.plan.conns.iter().copied().max().unwrap_or(1);
        let pool = tt_pool(
            &cluster.addr(),
            &cluster.user,
            &cluster.password,
            max_c,
            native_probe(&self.ds),
        )
        .await
        .with_context(|| cluster.log_tail())?;
        let storages = cluster
            .storage_addrs
            .iter()
            .map(|a| tt::client(a, &cluster.bench_user, &cluster.bench_password, true))
            .collect();
        let ep = Endpoint {
            cpu: CpuSource::Processes(cluster.pids()),
            router_cpu: Some(CpuSource::Process(cluster.router_pid())),
            admin: None,
            router: Some(loader),
            storages,
        };
        Ok((cluster, ep, pool))
    }

    /// The sharded store: its own cluster (and the earlier build's, for
    /// `sharded-base`), then their cells; the clusters are stopped after.
    async fn sharded(
        &mut self,
        cells: &[Cell],
        vshard_dir: Option<&Path>,
        pools: &mut Pools,
        info: &Arc<tt::ServerInfo>,
    ) -> Result<()> {
        let mut endpoints = HashMap::new();
        let (repo, lib_dir) = (self.repo.clone(), self.lib_dir.clone());
        let (cluster, ep, pool) = self
            .start_cluster(&repo, &lib_dir, vshard_dir, self.list_wanted)
            .await?;
        pools.sharded = pool;
        let mut ep = ep;
        if info.inbox.is_none() {
            // Its storages never drain their outboxes: nothing to wait for.
            ep.storages.clear();
        }
        // A build whose router does not route the inbox's calls yet: its list
        // and mark cells are left out, and the report says so.
        let mut cells = cells.to_vec();
        let mut skipped = String::new();
        if cells.iter().any(|c| is_inbox_workload(c.workload)) {
            if let Some(router) = &ep.router {
                let probe = rmpv::Value::Array(vec![rmpv::Value::from(
                    self.ds.list_user_strs.first().map_or("", String::as_str),
                )]);
                if let Err(e) = tt::call_value(router, "list_dialogs", probe).await {
                    let before = cells.len();
                    cells.retain(|c| !is_inbox_workload(c.workload));
                    self.progress.total -= before - cells.len();
                    skipped = format!(
                        "; `list` and `mark` skipped: the router does not serve list_dialogs ({e:#})"
                    );
                    eprintln!("sharded list, mark: skipped: {e:#}");
                }
            }
        }
        endpoints.insert(Target::Sharded, ep);
        let mut base_cluster = None;
        if let Some((repo, lib_dir)) = self.base.clone() {
            if cells.iter().any(|c| c.target == Target::ShardedBase) {
                let (c, ep, pool) = self
                    .start_cluster(&repo, &lib_dir, vshard_dir, false)
                    .await?;
                pools.sharded_base = pool;
                endpoints.insert(Target::ShardedBase, ep);
                base_cluster = Some(c);
            }
        }
        self.report.sharded = Some(format!(
            "{SHARDED_STORAGES} storage replica sets of one master each and one router, \
             all the product's init.lua on this machine; server CPU is all of them, \
             `of which router` the router's part; each cell waits for its storages' \
             outboxes to empty before its CPU sample opens and before it closes, so the \
             sample holds the delivery of what its requests wrote{skipped}"
        ));
        self.run_cells(&cells, pools, info, &endpoints).await;
        pools.sharded.clear();
        pools.sharded_base.clear();
        drop(endpoints);
        drop(base_cluster);
        drop(cluster);
        Ok(())
    }

    /// The durable comparison: a fresh Tarantool with wal_mode=fsync, loaded
    /// for writes only, against PostgreSQL switched to synchronous_commit=on;
    /// that Tarantool is stopped after.
    async fn durable(
        &mut self,
        cells: &[Cell],
        pools: &mut Pools,
        info: &Arc<tt::ServerInfo>,
        pg_cpu: Option<&CpuSource>,
    ) -> Result<()> {
        eprintln!("starting Tarantool (wal_mode=fsync)");
        let tt = Tarantool::start(
            &TarantoolConfig {
                repo: &self.repo,
                product: &self.repo,
                lib_dir: &self.lib_dir,
                durability: Durability::Fsync,
                memtx_bytes: MEMTX_BYTES,
            },
            self.cleanup,
        )?;
        let admin = tt::client(&tt.addr(), &tt.bench_user, &tt.bench_password, true);
        tt::fill(&admin, "new_dialog", &self.ds, false).await?;
        let tt_cpu = CpuSource::Process(tt.pid());
        let max_c = self.plan.durable_conns.iter().copied().max().unwrap_or(1);
        pools.native = tt_pool(
            &tt.addr(),
            &tt.user,
            &tt.password,
            max_c,
            native_probe(&self.ds),
        )
        .await?;
        for c in &pools.pg {
            if let Conn::Postgres(c) = c {
                pg::set_durability(c, Durability::Fsync).await?;
            }
        }
        let mut endpoints = HashMap::from([(Target::Native, Endpoint::of_cpu(tt_cpu))]);
        if let Some(c) = pg_cpu {
            endpoints.insert(Target::Pg, Endpoint::of_cpu(c.clone()));
        }
        self.run_cells(cells, pools, info, &endpoints).await;
        pools.native.clear();
        drop(admin);
        drop(tt);
        Ok(())
    }
}

/// One whole run, step by step: the schedule, PostgreSQL, the main Tarantool
/// and its cells, the in-process measurements, the sharded cells, the durable
/// ones. Returns the report to write; servers are stopped as their steps end.
async fn run(args: Args, cleanup: Cleanup) -> Result<Report> {
    let plan = Plan::from_args(&args);
    let repo = args.repo.canonicalize().context("--repo")?;
    let lib_dir = repo.join(&args.lib_dir);
    let base = base_paths(&args)?;
    let ds = Arc::new(Dataset::new(
        plan.read_dialogs,
        plan.page_dialog_len,
        plan.list_users,
        plan.mark_dialogs,
    ));
    let started = Instant::now();
    let mut schedule = Schedule::new(&args, &plan);
    eprintln!(
        "dialogs-bench: {} cells of {:.1}s (+{:.1}s warm-up), C={:?}, pipelined={:?}",
        schedule.len(),
        plan.seconds,
        plan.warmup,
        plan.conns,
        plan.pipelined
    );
    let mut report = Report::new(plan.clone());
    report.sharded = schedule.sharded_skip.clone();
    if let Some(why) = &schedule.sharded_skip {
        eprintln!("sharded: {why}");
    }
    let mut run = Run {
        ds,
        timing: plan.timing(),
        progress: Progress {
            total: schedule.len(),
            done: 0,
            started,
        },
        list_wanted: schedule.has(|c| c.workload == Workload::List),
        page_wanted: schedule
            .sharded
            .iter()
            .any(|c| c.workload == Workload::Page),
        plan,
        repo,
        lib_dir,
        base,
        cleanup: &cleanup,
        report,
        peak_rate: HashMap::new(),
        mark_cursor: 0,
    };

    let pg = if args.no_pg {
        None
    } else {
        Some(run.start_postgres().await?)
    };
    let pg_cpu = pg.as_ref().map(|(p, _)| CpuSource::Tree(p.postmaster));
    let main = run.start_tarantool().await?;
    if main.info.inbox.is_none() && schedule.has(|c| is_inbox_workload(c.workload)) {
        eprintln!("list, mark: skipped: this build has no inbox, or never builds it");
        schedule.main.retain(|c| !is_inbox_workload(c.workload));
        schedule.sharded.retain(|c| !is_inbox_workload(c.workload));
        run.progress.total = schedule.len();
    }
    let mut pools = run.main_pools(&main, pg.as_ref()).await?;
    let mut endpoints = HashMap::new();
    let mut main_ep = Endpoint::of_cpu(CpuSource::Process(main.tt.pid()));
    main_ep.admin = Some(main.admin.clone());
    endpoints.insert(Target::Native, main_ep);
    if let Some(c) = &pg_cpu {
        endpoints.insert(Target::Pg, Endpoint::of_cpu(c.clone()));
    }
    let mut base_tt = None;
    if let Some((product, lib_dir)) = run.base.clone() {
        if schedule.main.iter().any(|c| c.target == Target::Base) {
            let (tt, ep, pool) = run.start_base(&product, &lib_dir).await?;
            pools.base = pool;
            endpoints.insert(Target::Base, ep);
            base_tt = Some(tt);
        }
    }
    eprintln!("data loaded in {:.1}s", started.elapsed().as_secs_f64());

    // The progress line's estimate counts from the first cell, not the loading.
    run.progress.started = Instant::now();
    run.run_cells(&schedule.main, &pools, &main.info, &endpoints)
        .await;
    pools.base.clear();
    endpoints.remove(&Target::Base);
    drop(base_tt);
    if !args.cells_only {
        run.in_process(&main.admin, pg.as_ref(), main.info.inbox.is_some())
            .await?;
    }
    drop(endpoints);
    pools.native.clear();
    pools.bench.clear();
    let MainTarantool { tt, admin, info } = main;
    drop(admin);
    drop(tt);

    if !schedule.sharded.is_empty() {
        let vshard_dir = schedule.vshard_dir.clone();
        run.sharded(&schedule.sharded, vshard_dir.as_deref(), &mut pools, &info)
            .await?;
    }
    if !schedule.durable.is_empty() {
        run.durable(&schedule.durable, &mut pools, &info, pg_cpu.as_ref())
            .await?;
    }
    pools.pg.clear();
    drop(pg);
    let mut report = run.report;
    report.wall_seconds = started.elapsed().as_secs_f64();
    report.loadavg_end = report::loadavg();
    Ok(report)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let out = args.out.clone();
    if args.replot {
        let mut n = 0;
        for e in std::fs::read_dir(&out).with_context(|| format!("{}", out.display()))? {
            let path = e?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with("tarantool-") && name.ends_with(".json") {
                let md = Report::read(&path)
                    .with_context(|| format!("{}", path.display()))?
                    .write(&out)?;
                eprintln!("redrew {}", md.display());
                n += 1;
            }
        }
        if n == 0 {
            bail!("no tarantool-*.json in {}", out.display());
        }
        return Ok(());
    }
    let threads = args.client_threads.max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let cleanup = Cleanup::default();
    let on_signal = cleanup.clone();
    let report = rt.block_on(async move {
        tokio::select! {
            r = run(args, cleanup) => r,
            _ = tokio::signal::ctrl_c() => {
                on_signal.stop_all();
                bail!("interrupted");
            }
        }
    });
    // Servers still running after an error are stopped by their Drop; this
    // catches any a failed start left behind.
    let report = report?;
    let md = report.write(&out)?;
    let failed: u64 = report.cells.iter().map(|c| c.errors).sum();
    let failed_cells = report.cells.iter().filter(|c| c.errors > 0).count();
    eprintln!(
        "done in {:.0}s: {} cells, {} errors; wrote {}",
        report.wall_seconds,
        report.cells.len(),
        failed,
        md.display()
    );
    // The count `make test` adds up: a cell passes when none of its requests failed.
    eprintln!(
        "bench: {} passed, {} failed",
        report.cells.len() - failed_cells,
        failed_cells
    );
    if failed > 0 {
        bail!("{failed} requests failed (see {})", md.display());
    }
    Ok(())
}
