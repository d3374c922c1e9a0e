//! `make soak`: many connections for a long time (issue 4, point 6). Not part of
//! `make test`.
//!
//! Starts its own server (init.lua behind the test admin wrapper) on 127.0.0.1, opens
//! `--connections` client connections (rusty_tarantool, one per simulated user pair)
//! and keeps all of them busy with a mix of new_dialog and get_dialog, each at a
//! fixed pace, for `--seconds`. Then a read-only phase of `--idle-seconds`: the same
//! connections, get_dialog only.
//!
//! Passes (exit 0) when: every call succeeded; the server held all connections at
//! once; during the mixed phase its RSS grew by no more than the memtx arena the
//! stored data took, plus a fixed allowance; and during the read-only phase
//! neither RSS nor box.slab.info().arena_used grew beyond small allowances (nothing
//! leaks per call). Prints the figures as they are sampled and a summary at the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialogs_e2e::server::{Server, PASSWORD, USER};
use rmpv::Value;
use rusty_tarantool::tarantool::{Client, ClientConfig};
use uuid::Uuid;

const MIB: u64 = 1024 * 1024;
const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// The server's memtx arena for the soak.
const MEMTX_MEMORY: u64 = 1024 * MIB;
/// RSS the server may gain in the mixed phase beyond what the stored data took in
/// the memtx arena (WAL and network buffers, allocator slack).
const RSS_ALLOWANCE_MIXED: u64 = 32 * MIB;
/// RSS and arena the server may gain while only reading.
const RSS_ALLOWANCE_IDLE: u64 = 8 * MIB;
const ARENA_ALLOWANCE_IDLE: u64 = MIB;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Connections opened at once while ramping up (the listen backlog is finite).
const CONNECT_BATCH: usize = 100;

struct Options {
    connections: usize,
    seconds: u64,
    idle_seconds: u64,
    /// Calls per second per connection.
    rate: f64,
}

fn parse_options() -> Options {
    let mut o = Options {
        connections: 1000,
        seconds: 60,
        idle_seconds: 15,
        rate: 10.0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or("");
        let bad = || -> ! {
            eprintln!(
                "usage: soak [--connections N] [--seconds S] [--idle-seconds S] [--rate CALLS_PER_S]"
            );
            std::process::exit(2)
        };
        match pair[0].as_str() {
            "--connections" => o.connections = value.parse().unwrap_or_else(|_| bad()),
            "--seconds" => o.seconds = value.parse().unwrap_or_else(|_| bad()),
            "--idle-seconds" => o.idle_seconds = value.parse().unwrap_or_else(|_| bad()),
            "--rate" => o.rate = value.parse().unwrap_or_else(|_| bad()),
            _ => bad(),
        }
    }
    o
}

/// One memory reading of the server.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rss: u64,
    arena_used: u64,
    quota_used: u64,
    items_used: u64,
    messages: u64,
    connections: u64,
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn sample(server: &Server, admin: &mut dialogs_e2e::admin::Admin) -> Sample {
    let pid = server.pid().expect("running");
    let mut get = |expr: &str| admin.eval_u64(expr).expect(expr);
    Sample {
        arena_used: get("box.slab.info().arena_used"),
        quota_used: get("box.slab.info().quota_used"),
        items_used: get("box.slab.info().items_used"),
        messages: get("box.space.dialogs:len()"),
        // IPROTO connections open now (the admin console is not one).
        connections: get("box.stat.net().CONNECTIONS.current"),
        rss: rss_bytes(pid),
    }
}

fn print_sample(phase: &str, t: Duration, s: &Sample, calls: u64) {
    println!(
        "{phase:>5} t={:>4}s calls={calls:>8} messages={:>8} conns={:>5} rss={:>6.1} MiB \
         arena_used={:>6.1} MiB quota_used={:>6.1} MiB items_used={:>6.1} MiB",
        t.as_secs(),
        s.messages,
        s.connections,
        s.rss as f64 / MIB as f64,
        s.arena_used as f64 / MIB as f64,
        s.quota_used as f64 / MIB as f64,
        s.items_used as f64 / MIB as f64,
    );
}

#[derive(Default)]
struct Counters {
    new_ok: AtomicU64,
    get_ok: AtomicU64,
    errors: AtomicU64,
}

/// One simulated user pair on its own connection: new_dialog, then get_dialog of the
/// pair's dialog (newest 20), at `rate` calls per second, until `stop`; only
/// get_dialog while `read_only`.
async fn user_pair(
    client: Client,
    rate: f64,
    counters: Arc<Counters>,
    read_only: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let dialog = dialogs_e2e::derived_dialog_id(alice, bob).to_string();
    let (alice, bob) = (alice.to_string(), bob.to_string());
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    let opts = Value::Map(vec![
        ("limit".into(), 20.into()),
        ("reverse".into(), true.into()),
    ]);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        // The first call writes, so that every dialog read has messages.
        let write = n == 1 || (n.is_multiple_of(2) && !read_only.load(Ordering::Relaxed));
        let result = if write {
            let text = format!("soak message {n}");
            client
                .call_fn4("new_dialog", &Value::Nil, &alice, &bob, &text)
                .await
                .map(|_| counters.new_ok.fetch_add(1, Ordering::Relaxed))
        } else {
            client
                .call_fn2("get_dialog", &dialog, &opts)
                .await
                .map(|_| counters.get_ok.fetch_add(1, Ordering::Relaxed))
        };
        if let Err(e) = result {
            if counters.errors.fetch_add(1, Ordering::Relaxed) < 10 {
                eprintln!("call failed: {e}");
            }
        }
    }
}

fn main() {
    let o = parse_options();
    let memtx = MEMTX_MEMORY.to_string();
    let mut server = Server::start_with_admin(&[("DIALOGS_MEMTX_MEMORY", memtx.as_str())]);
    let mut admin = server.admin();
    let addr = server.addr();
    println!(
        "soak: {} connections, {} s mixed + {} s read-only, {} calls/s each, server pid {:?} on {addr}",
        o.connections,
        o.seconds,
        o.idle_seconds,
        o.rate,
        server.pid()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let counters = Arc::new(Counters::default());
    let read_only = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();

    // Ramp up in batches: each client connects on its first call.
    let t0 = Instant::now();
    for batch in 0..o.connections.div_ceil(CONNECT_BATCH) {
        for _ in 0..CONNECT_BATCH.min(o.connections - batch * CONNECT_BATCH) {
            let client = ClientConfig::new(addr.clone(), USER, PASSWORD)
                .set_timeout_time_ms(REQUEST_TIMEOUT_MS)
                .build();
            tasks.push(rt.spawn(user_pair(
                client,
                o.rate,
                counters.clone(),
                read_only.clone(),
                stop.clone(),
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let calls = |c: &Counters| {
        c.new_ok.load(Ordering::Relaxed)
            + c.get_ok.load(Ordering::Relaxed)
            + c.errors.load(Ordering::Relaxed)
    };
    let start = sample(&server, &mut admin);
    print_sample("start", t0.elapsed(), &start, calls(&counters));
    let mut peak_connections = start.connections;

    let mixed_end = Instant::now() + Duration::from_secs(o.seconds);
    let mut last = start;
    while Instant::now() < mixed_end {
        std::thread::sleep(SAMPLE_EVERY.min(mixed_end.saturating_duration_since(Instant::now())));
        last = sample(&server, &mut admin);
        peak_connections = peak_connections.max(last.connections);
        print_sample("mixed", t0.elapsed(), &last, calls(&counters));
    }
    let mixed = last;
    let mixed_calls = calls(&counters);

    read_only.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2)); // let in-flight writes land
    let idle_start = sample(&server, &mut admin);
    print_sample("read", t0.elapsed(), &idle_start, calls(&counters));
    std::thread::sleep(Duration::from_secs(o.idle_seconds));
    let idle_end = sample(&server, &mut admin);
    print_sample("read", t0.elapsed(), &idle_end, calls(&counters));

    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let total = calls(&counters);
    let errors = counters.errors.load(Ordering::Relaxed);
    let alive = server.is_running();

    let stored = mixed.messages.saturating_sub(start.messages);
    let rss_growth = mixed.rss.saturating_sub(start.rss);
    let quota_growth = mixed.quota_used.saturating_sub(start.quota_used);
    let arena_growth = mixed.arena_used.saturating_sub(start.arena_used);
    let per_message = |bytes: u64| bytes.checked_div(stored).unwrap_or(0);
    let idle_rss_growth = idle_end.rss.saturating_sub(idle_start.rss);
    let idle_arena_growth = idle_end.arena_used.saturating_sub(idle_start.arena_used);
    println!(
        "summary: {total} calls ({} new_dialog, {} get_dialog), {errors} errors, \
         {:.0} calls/s in the mixed phase; peak server connections {peak_connections} \
         mixed phase: +{stored} messages, RSS +{:.1} MiB \
         ({} B/message), arena_used +{:.1} MiB ({} B/message), quota_used +{:.1} MiB; \
         read-only phase ({} s): RSS +{:.2} MiB, arena_used +{:.2} MiB",
        counters.new_ok.load(Ordering::Relaxed),
        counters.get_ok.load(Ordering::Relaxed),
        mixed_calls as f64 / o.seconds.max(1) as f64,
        rss_growth as f64 / MIB as f64,
        per_message(rss_growth),
        arena_growth as f64 / MIB as f64,
        per_message(arena_growth),
        quota_growth as f64 / MIB as f64,
        o.idle_seconds,
        idle_rss_growth as f64 / MIB as f64,
        idle_arena_growth as f64 / MIB as f64,
    );

    let mut failures = Vec::new();
    if errors > 0 {
        failures.push(format!("{errors} calls failed"));
    }
    if !alive {
        failures.push("the server died".to_owned());
    }
    if peak_connections < o.connections as u64 {
        failures.push(format!(
            "the server never held {} connections (peak {peak_connections})",
            o.connections
        ));
    }
    let data_growth = arena_growth.max(quota_growth);
    if rss_growth > data_growth + RSS_ALLOWANCE_MIXED {
        failures.push(format!(
            "RSS grew {rss_growth} B, more than the stored data took in memtx \
             ({data_growth} B) + {RSS_ALLOWANCE_MIXED} B"
        ));
    }
    if idle_rss_growth > RSS_ALLOWANCE_IDLE || idle_arena_growth > ARENA_ALLOWANCE_IDLE {
        failures.push(format!(
            "memory grew without new data: RSS +{idle_rss_growth} B, arena +{idle_arena_growth} B"
        ));
    }
    server.stop();
    if failures.is_empty() {
        println!("soak: PASS");
    } else {
        println!("soak: FAIL: {}", failures.join("; "));
        std::process::exit(1);
    }
}
