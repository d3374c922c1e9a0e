//! The closed-loop load generator: C tasks, each with one request outstanding,
//! over C connections (`conns`) or one (`pipelined`); a warm-up, then a measured
//! window; latency in an HDR histogram; server CPU from /proc.

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::cpu::{self, CpuSource};
use crate::data::{Dataset, Op};
use crate::model::{Cell, CellResult, Mode};
use crate::pg::{self, PgConn};
use crate::tt::{self, ServerInfo};

/// Latencies are recorded in microseconds, up to this many (longer ones are
/// clamped; requests time out well before).
const MAX_LATENCY_US: u64 = 60_000_000;

/// One connection of a target.
#[derive(Clone)]
pub enum Conn {
    Tarantool(rusty_tarantool::tarantool::Client),
    Postgres(Arc<PgConn>),
}

/// Where a cell's server CPU time is read: the whole server, and the part of
/// it that is a sharded cluster's router.
#[derive(Clone, Copy)]
pub struct ServerCpu<'a> {
    pub total: &'a CpuSource,
    pub router: Option<&'a CpuSource>,
}

/// Time spent per cell.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
}

struct TaskOut {
    hist: Histogram<u32>,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
}

/// A sharded cluster's storages, asked for the rows left in their outboxes: a
/// cell on it waits until every one is delivered before its CPU sample opens
/// (what earlier cells and the seeding left) and before it closes (what the
/// cell's own requests wrote), so that the sample holds the delivery of exactly
/// the messages and receipts of its measured requests, drainer included.
pub struct Settle<'a> {
    pub storages: &'a [rusty_tarantool::tarantool::Client],
}

/// Longest wait for the outboxes to empty before the cell counts an error.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the outboxes are asked while they drain.
const SETTLE_POLL: Duration = Duration::from_millis(10);

impl Settle<'_> {
    /// Until every storage's outbox is empty; the time it took.
    pub async fn wait(&self) -> Result<Duration, String> {
        let t0 = Instant::now();
        loop {
            let mut left = 0;
            for s in self.storages {
                left += tt::outbox_len(s).await.map_err(|e| format!("{e:#}"))?;
            }
            if left == 0 {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > SETTLE_TIMEOUT {
                return Err(format!(
                    "{left} outbox rows still undelivered after {}s",
                    SETTLE_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }
}

/// C tasks of `cell` issuing requests until `end`, recording those started at
/// or after `measure_start` (none when it is `end`).
fn spawn_tasks(
    cell: Cell,
    conns: &[Conn],
    ds: &Arc<Dataset>,
    info: &Arc<ServerInfo>,
    measure_start: Instant,
    end: Instant,
    done: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<TaskOut>> {
    let mut tasks = Vec::with_capacity(cell.concurrency);
    for i in 0..cell.concurrency {
        let conn = match cell.mode {
            Mode::Conns => conns[i % conns.len()].clone(),
            Mode::Pipelined => conns[0].clone(),
        };
        let ds = Arc::clone(ds);
        let info = Arc::clone(info);
        let done = Arc::clone(done);
        tasks.push(tokio::spawn(async move {
            let mut out = TaskOut {
                hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                    .expect("constant histogram bounds are valid"),
                ops: 0,
                errors: 0,
                first_error: None,
            };
            let mut rng = SmallRng::seed_from_u64(0x5eed ^ i as u64);
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let op = ds.next_op(cell.workload, &mut rng);
                if matches!(op, Op::Mark(None)) {
                    // Nothing left to send: one error, and this task stops.
                    out.errors += 1;
                    out.first_error.get_or_insert(
                        "mark: the entries seeded unread for this cell ran out".to_owned(),
                    );
                    break;
                }
                let result = match &conn {
                    Conn::Tarantool(c) => {
                        let (packet, expect) = tt::request(cell.target, &op, &ds, &info);
                        tt::execute(c, packet, expect).await
                    }
                    Conn::Postgres(c) => pg::execute(c, &op, &ds).await,
                };
                let us = t0.elapsed().as_micros() as u64;
                if let Err(e) = result {
                    out.errors += 1;
                    out.first_error.get_or_insert(e);
                }
                if t0 >= measure_start {
                    out.ops += 1;
                    let _ = out.hist.record(us.clamp(1, MAX_LATENCY_US));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            out
        }));
    }
    tasks
}

/// Runs one cell against `conns` (at least C of them in `conns` mode, one is
/// used in `pipelined` mode) and returns what it measured. With `settle`, the
/// warm-up and the measured window are two separate loads, each followed by a
/// wait for the outboxes to empty, and the CPU sample spans the measured load
/// and the delivery of what it wrote (`Settle`).
#[allow(clippy::too_many_arguments)]
pub async fn run_cell(
    cell: Cell,
    conns: &[Conn],
    ds: &Arc<Dataset>,
    info: &Arc<ServerInfo>,
    server_cpu: ServerCpu<'_>,
    settle: Option<&Settle<'_>>,
    timing: Timing,
    label: &str,
) -> CellResult {
    let done = Arc::new(AtomicU64::new(0));
    // Each task's result; the warm-up's (with settle) record no requests, only
    // their errors.
    let mut outs = Vec::with_capacity(cell.concurrency * 2);
    let mut settle_error: Option<String> = None;
    let mut drain = None;
    let (measure_start, end) = if let Some(s) = settle {
        if let Err(e) = s.wait().await {
            settle_error.get_or_insert(e);
        }
        let warm_end = Instant::now() + timing.warmup;
        for t in spawn_tasks(cell, conns, ds, info, warm_end, warm_end, &done) {
            outs.push(t.await);
        }
        if let Err(e) = s.wait().await {
            settle_error.get_or_insert(e);
        }
        let start = Instant::now();
        (start, start + timing.measure)
    } else {
        let start = Instant::now() + timing.warmup;
        (start, start + timing.measure)
    };
    let tasks = spawn_tasks(cell, conns, ds, info, measure_start, end, &done);

    // CPU at the edges of the measured window, and a progress line meanwhile.
    let tty = std::io::stderr().is_terminal();
    tokio::time::sleep_until(measure_start).await;
    let r0 = server_cpu.router.map(CpuSource::seconds);
    let (s0, c0, t0) = (
        server_cpu.total.seconds(),
        cpu::self_seconds(),
        Instant::now(),
    );
    while Instant::now() < end {
        tokio::time::sleep_until((Instant::now() + Duration::from_secs(1)).min(end)).await;
        if tty {
            let secs = t0.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\r{label} {:>9.0} ops/s   ",
                done.load(Ordering::Relaxed) as f64 / secs
            );
            let _ = std::io::stderr().flush();
        }
    }
    let mut tasks = Some(tasks);
    if settle.is_some() {
        // Every request of the window answered, then every delivery made.
        for t in tasks.take().into_iter().flatten() {
            outs.push(t.await);
        }
    }
    let load_secs = t0.elapsed().as_secs_f64();
    if let Some(s) = settle {
        match s.wait().await {
            Ok(d) => drain = Some(d.as_secs_f64() * 1000.0),
            Err(e) => {
                settle_error.get_or_insert(e);
            }
        }
    }
    let (s1, c1) = (server_cpu.total.seconds(), cpu::self_seconds());
    let secs = if settle.is_some() {
        load_secs
    } else {
        t0.elapsed().as_secs_f64()
    };
    let r1 = server_cpu.router.map(CpuSource::seconds);
    for t in tasks.into_iter().flatten() {
        outs.push(t.await);
    }

    let mut hist: Histogram<u32> = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .expect("constant histogram bounds are valid");
    let (mut ops, mut errors, mut first_error) = (0u64, 0u64, settle_error.clone());
    errors += u64::from(settle_error.is_some());
    for t in outs {
        match t {
            Ok(out) => {
                let _ = hist.add(&out.hist);
                ops += out.ops;
                errors += out.errors;
                if first_error.is_none() {
                    first_error = out.first_error;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("load task failed: {e}"));
            }
        }
    }
    let per_op = |cpu_s: f64| {
        if ops > 0 {
            cpu_s * 1e6 / ops as f64
        } else {
            0.0
        }
    };
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    CellResult {
        cell,
        ops,
        errors,
        first_error,
        seconds: secs,
        ops_per_sec: ops as f64 / secs.max(1e-9),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        server_cpu_us: per_op(s1 - s0),
        client_cpu_us: per_op(c1 - c0),
        router_cpu_us: r0.zip(r1).map(|(a, b)| per_op(b - a)),
        drain_ms: drain,
    }
}
