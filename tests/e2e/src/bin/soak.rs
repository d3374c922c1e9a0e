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
//!
//! `--request-ttl S`: every new_dialog carries a fresh `opts.request_id` and the
//! server expires request ids after S seconds (DIALOGS_REQUEST_TTL). Then it also
//! passes only when, once the mixed phase has run longer than the TTL, the rows of
//! dialogs_requests and the memory they take (space and index bsize) stay flat (no
//! more than a quarter above the first such sample, and rows within the TTL's worth
//! of writes), and, when the read-only phase outlasts the TTL, they all expire.

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
/// In --request-ttl mode: how far the request rows and their memory may rise above
/// their first reading after one TTL, as a fraction, plus a fixed allowance.
const REQUESTS_FLAT_FRACTION: f64 = 0.25;
const REQUESTS_FLAT_ALLOWANCE: u64 = MIB;
/// The server's pause between two expiry passes: a tenth of the TTL, 0.1..=60 s
/// (dialogs/requests.lua).
fn expiry_period(ttl: f64) -> f64 {
    (ttl / 10.0).clamp(0.1, 60.0)
}

struct Options {
    connections: usize,
    seconds: u64,
    idle_seconds: u64,
    /// Calls per second per connection.
    rate: f64,
    /// Seconds request ids are kept; with it, every write carries a request id.
    request_ttl: Option<f64>,
}

fn parse_options() -> Options {
    let mut o = Options {
        connections: 1000,
        seconds: 60,
        idle_seconds: 15,
        rate: 10.0,
        request_ttl: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or("");
        let bad = || -> ! {
            eprintln!(
                "usage: soak [--connections N] [--seconds S] [--idle-seconds S] [--rate CALLS_PER_S] \
                 [--request-ttl S]"
            );
            std::process::exit(2)
        };
        match pair[0].as_str() {
            "--connections" => o.connections = value.parse().unwrap_or_else(|_| bad()),
            "--seconds" => o.seconds = value.parse().unwrap_or_else(|_| bad()),
            "--idle-seconds" => o.idle_seconds = value.parse().unwrap_or_else(|_| bad()),
            "--rate" => o.rate = value.parse().unwrap_or_else(|_| bad()),
            "--request-ttl" => {
                let ttl: f64 = value.parse().unwrap_or_else(|_| bad());
                if !(ttl > 0.0 && ttl.is_finite()) {
                    bad()
                }
                o.request_ttl = Some(ttl)
            }
            _ => bad(),
        }
    }
    if let Some(ttl) = o.request_ttl {
        if (o.seconds as f64) < ttl + 2.0 * SAMPLE_EVERY.as_secs_f64() {
            eprintln!(
                "soak: --seconds must exceed --request-ttl by two samples ({} s) to show \
                 the request ids flat",
                2 * SAMPLE_EVERY.as_secs()
            );
            std::process::exit(2)
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
    /// Rows of dialogs_requests, and the bytes they take (space and indexes).
    requests: u64,
    requests_bytes: u64,
}

/// Bytes of the space dialogs_requests: tuples plus every index.
const REQUESTS_BYTES: &str = "(function() local s = box.space.dialogs_requests \
    local n = tonumber(s:bsize()) for id, i in pairs(s.index) do \
    if type(id) == 'number' then n = n + tonumber(i:bsize()) end end return n end)()";

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
        requests: get("box.space.dialogs_requests:len()"),
        requests_bytes: get(REQUESTS_BYTES),
        rss: rss_bytes(pid),
    }
}

fn print_sample(phase: &str, t: Duration, s: &Sample, calls: u64) {
    println!(
        "{phase:>5} t={:>4}s calls={calls:>8} messages={:>8} conns={:>5} rss={:>6.1} MiB \
         arena_used={:>6.1} MiB quota_used={:>6.1} MiB items_used={:>6.1} MiB \
         requests={:>7} ({:.2} MiB)",
        t.as_secs(),
        s.messages,
        s.connections,
        s.rss as f64 / MIB as f64,
        s.arena_used as f64 / MIB as f64,
        s.quota_used as f64 / MIB as f64,
        s.items_used as f64 / MIB as f64,
        s.requests,
        s.requests_bytes as f64 / MIB as f64,
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
/// get_dialog while `read_only`. With `request_ids`, each new_dialog carries a new
/// `opts.request_id`.
async fn user_pair(
    client: Client,
    rate: f64,
    request_ids: bool,
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
            let call = if request_ids {
                let opts = Value::Map(vec![(
                    "request_id".into(),
                    Uuid::new_v4().to_string().into(),
                )]);
                client
                    .call_fn5("new_dialog", &Value::Nil, &alice, &bob, &text, &opts)
                    .await
            } else {
                client
                    .call_fn4("new_dialog", &Value::Nil, &alice, &bob, &text)
                    .await
            };
            call.map(|_| counters.new_ok.fetch_add(1, Ordering::Relaxed))
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
    let ttl = o.request_ttl.map(|t| t.to_string());
    let mut env = vec![("DIALOGS_MEMTX_MEMORY", memtx.as_str())];
    if let Some(ttl) = &ttl {
        env.push(("DIALOGS_REQUEST_TTL", ttl.as_str()));
    }
    let mut server = Server::start_with_admin(&env);
    let mut admin = server.admin();
    let addr = server.addr();
    println!(
        "soak: {} connections, {} s mixed + {} s read-only, {} calls/s each, server pid {:?} on {addr}{}",
        o.connections,
        o.seconds,
        o.idle_seconds,
        o.rate,
        server.pid(),
        o.request_ttl
            .map(|t| format!(", request ids expiring after {t} s"))
            .unwrap_or_default()
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
                o.request_ttl.is_some(),
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

    let mixed_start = Instant::now();
    let mixed_end = mixed_start + Duration::from_secs(o.seconds);
    let mut last = start;
    // Samples taken once the mixed phase has run for longer than the request TTL
    // and one expiry pass: request ids expire as fast as they come.
    let mut steady: Vec<Sample> = Vec::new();
    while Instant::now() < mixed_end {
        std::thread::sleep(SAMPLE_EVERY.min(mixed_end.saturating_duration_since(Instant::now())));
        last = sample(&server, &mut admin);
        peak_connections = peak_connections.max(last.connections);
        print_sample("mixed", t0.elapsed(), &last, calls(&counters));
        if let Some(ttl) = o.request_ttl {
            if mixed_start.elapsed().as_secs_f64() >= ttl + expiry_period(ttl) + 1.0 {
                steady.push(last);
            }
        }
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
    if let Some(ttl) = o.request_ttl {
        // Writes per second: every other call of each connection.
        let writes_per_s = o.connections as f64 * o.rate / 2.0;
        let max_rows = (writes_per_s * (ttl + expiry_period(ttl) + 2.0) * 1.5) as u64;
        let (first, peak_rows, peak_bytes) = match steady.first() {
            Some(f) => (
                *f,
                steady.iter().map(|s| s.requests).max().unwrap_or(0),
                steady.iter().map(|s| s.requests_bytes).max().unwrap_or(0),
            ),
            None => (Sample::default(), 0, 0),
        };
        println!(
            "request ids (TTL {ttl} s): {} samples after one TTL; rows {} -> peak {peak_rows} \
             (at most {max_rows} expected); bytes {:.2} MiB -> peak {:.2} MiB; \
             after the read-only phase: {} rows, {:.2} MiB",
            steady.len(),
            first.requests,
            first.requests_bytes as f64 / MIB as f64,
            peak_bytes as f64 / MIB as f64,
            idle_end.requests,
            idle_end.requests_bytes as f64 / MIB as f64,
        );
        let flat = |first: u64, peak: u64| {
            peak as f64
                <= first as f64 * (1.0 + REQUESTS_FLAT_FRACTION) + REQUESTS_FLAT_ALLOWANCE as f64
        };
        if steady.len() < 2 {
            failures.push(format!(
                "only {} samples after one TTL: cannot show request ids flat",
                steady.len()
            ));
        } else if peak_rows > max_rows || !flat(first.requests_bytes, peak_bytes) {
            failures.push(format!(
                "request ids did not stay flat: rows peak {peak_rows} (max {max_rows}), \
                 bytes {} -> {peak_bytes}",
                first.requests_bytes
            ));
        }
        if o.idle_seconds as f64 >= ttl + 2.0 * expiry_period(ttl) + 2.0 && idle_end.requests > 0 {
            failures.push(format!(
                "{} request ids left after a read-only phase longer than the TTL",
                idle_end.requests
            ));
        }
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
