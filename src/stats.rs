//! What the procedures count about themselves: calls, errors by code and a
//! latency histogram per procedure, and the slow-call log (docs/metrics.md).
//!
//! Every call that enters at [`crate::serve`] is counted here, once at entry
//! ([`Call::start`]) and once at exit ([`Call::end`]). The figures leave the
//! module through the C function `dialogs_stats` (one msgpack map,
//! [`Counters::encode`]), which `dialogs/metrics.lua` turns into `metrics`
//! collectors or `require('dialogs').stats()`.
//!
//! Tarantool loads each procedure from its own copy of the library (one per
//! package name: `new_dialog.so`, `get_dialog.so`, ... are copied and opened
//! apart), so a `static` here is one copy's only. The counters therefore live in
//! one block per process, allocated by the first copy that needs it, never freed,
//! and found by the others through the Lua state (`package.loaded`, under a key
//! that names the block's layout, so that a build with another layout gets a block
//! of its own). A copy keeps only the block's address, in an atomic: nothing here
//! has a destructor, so the module stays unloadable by `box.schema.func.reload`.
//!
//! Procedures run in the tx thread only, one at a time, and a counter is
//! written by nothing else: an update is a plain load and store (no locked
//! instruction), and `dialogs_stats`, on the same thread, reads whole figures.

use crate::msgpack::{Reader, Value};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::Relaxed};

/// Declares the procedures counted, in one list: adding one is one line here.
/// Each gets a [`Proc`] variant and its name, the label its figures carry.
macro_rules! procedures {
    ($($variant:ident = $name:literal,)*) => {
        /// A procedure whose calls are counted. [`Proc::Other`] counts a call of an
        /// entry missing from the list (a bug: every entry belongs in it).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Proc {
            $($variant,)*
            Other,
        }

        impl Proc {
            /// Every procedure, in slot order.
            pub const ALL: &'static [Proc] = &[$(Proc::$variant,)* Proc::Other];

            /// The procedure's name, as clients call it.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Proc::$variant => $name,)*
                    Proc::Other => "other",
                }
            }

            /// Whether its calls are counted and logged: not those of the two
            /// functions that read and set the figures (a scrape would count
            /// itself, and log itself as slow).
            pub const fn counted(self) -> bool {
                !matches!(self, Proc::Stats | Proc::SlowCalls)
            }

            /// The procedure called `name`.
            pub fn of(name: &str) -> Proc {
                match name {
                    $($name => Proc::$variant,)*
                    _ => Proc::Other,
                }
            }
        }
    };
}

procedures! {
    NewDialog = "new_dialog",
    GetDialog = "get_dialog",
    ListDialogs = "list_dialogs",
    MarkRead = "mark_read",
    Route = "dialogs_route",
    StorageGet = "dialogs_storage_get",
    StorageNew = "dialogs_storage_new",
    StorageList = "dialogs_storage_list",
    StorageInboxApply = "dialogs_storage_inbox_apply",
    StorageInboxApplyMany = "dialogs_storage_inbox_apply_many",
    StorageReadCount = "dialogs_storage_read_count",
    StorageMarkReadApply = "dialogs_storage_mark_read_apply",
    InboxBuild = "dialogs_inbox_build",
    Stats = "dialogs_stats",
    SlowCalls = "dialogs_slow_calls",
    TestPanic = "dialogs_test_panic",
}

/// How many procedures have counters.
pub const PROCS: usize = Proc::ALL.len();

/// Upper bounds of the latency histogram's buckets, microseconds (a call of
/// exactly a bound falls in that bucket); one more bucket takes everything
/// slower. From below a memtx read to past a synchronous write's timeout.
pub const LATENCY_BOUNDS_US: [u64; 18] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Buckets per procedure: one per bound, and the one above the last.
pub const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

const NS_PER_US: u64 = 1_000;
const NS_PER_MS: u64 = 1_000_000;
const NS_PER_S: u64 = 1_000_000_000;

/// [`LATENCY_BOUNDS_US`] in nanoseconds, what a call's time is compared with.
const LATENCY_BOUNDS_NS: [u64; LATENCY_BOUNDS_US.len()] = {
    let mut ns = [0; LATENCY_BOUNDS_US.len()];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = LATENCY_BOUNDS_US[i] * NS_PER_US;
        i += 1;
    }
    ns
};

/// Error slots per procedure: one code each, but the last, which adds up the
/// codes beyond the others (reported as `other`). A procedure has about ten
/// codes of its own.
pub const ERROR_SLOTS: usize = 24;

/// At most this many slow-call lines are logged per second; the ones beyond are
/// counted and reported on the next line logged.
pub const SLOW_LINES_PER_S: u64 = 10;

/// The slow-call threshold that means "off".
const SLOW_OFF: u64 = u64::MAX;

/// The largest threshold `dialogs_slow_calls` takes, milliseconds (one hour).
pub const MAX_SLOW_MS: u64 = 3_600_000;

/// Bumped when the block's meaning changes without its shape changing.
const LAYOUT_VERSION: u32 = 1;

/// One error code's count: `code_plus_one` 0 is a free slot.
struct ErrorSlot {
    code_plus_one: AtomicU64,
    count: AtomicU64,
}

impl ErrorSlot {
    const fn new() -> Self {
        ErrorSlot {
            code_plus_one: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

/// Adds `n` to a counter only the tx thread writes (see the module's comment).
#[inline(always)]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Every figure of the process: one block, shared by the library's copies.
pub struct Counters {
    calls: [AtomicU64; PROCS],
    errors: [[ErrorSlot; ERROR_SLOTS]; PROCS],
    /// Calls per latency bucket (not cumulative).
    latency: [[AtomicU64; BUCKETS]; PROCS],
    latency_sum_ns: [AtomicU64; PROCS],
    /// Calls at least this slow are logged; [`SLOW_OFF`]: none.
    slow_ns: AtomicU64,
    /// The slow-call log's rate limit: the current one-second window, the lines
    /// logged in it, and the slow calls not logged since the last line.
    slow_window_ns: AtomicU64,
    slow_lines: AtomicU64,
    slow_suppressed: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const NO_ERRORS: [ErrorSlot; ERROR_SLOTS] = [const { ErrorSlot::new() }; ERROR_SLOTS];
#[allow(clippy::declare_interior_mutable_const)]
const NO_CALLS: [AtomicU64; BUCKETS] = [ZERO; BUCKETS];

impl Counters {
    /// Every figure at zero, slow calls off.
    pub const fn new() -> Self {
        Counters {
            calls: [ZERO; PROCS],
            errors: [NO_ERRORS; PROCS],
            latency: [NO_CALLS; PROCS],
            latency_sum_ns: [ZERO; PROCS],
            slow_ns: AtomicU64::new(SLOW_OFF),
            slow_window_ns: ZERO,
            slow_lines: ZERO,
            slow_suppressed: ZERO,
        }
    }

    /// Counts one call of `proc` that took `ns` and ended with error `code`
    /// (None: success).
    #[inline]
    pub fn record(&self, proc: Proc, ns: u64, code: Option<u32>) {
        let p = proc as usize;
        if let Some(calls) = self.calls.get(p) {
            bump(calls, 1);
        }
        if let Some(sum) = self.latency_sum_ns.get(p) {
            bump(sum, ns);
        }
        let bucket = LATENCY_BOUNDS_NS.partition_point(|&bound| bound < ns);
        if let Some(count) = self.latency.get(p).and_then(|b| b.get(bucket)) {
            bump(count, 1);
        }
        if let Some(code) = code {
            self.record_error(p, code);
        }
    }

    /// Counts error `code` of procedure slot `p`: in the code's slot, a free one,
    /// or (all taken) the last, which holds no code of its own: `other`.
    fn record_error(&self, p: usize, code: u32) {
        let Some((other, slots)) = self.errors.get(p).and_then(|s| s.split_last()) else {
            return;
        };
        let wanted = u64::from(code) + 1;
        for slot in slots {
            let held = slot.code_plus_one.load(Relaxed);
            if held == 0 {
                slot.code_plus_one.store(wanted, Relaxed);
            }
            if held == 0 || held == wanted {
                bump(&slot.count, 1);
                return;
            }
        }
        bump(&other.count, 1);
    }

    /// The slow-call threshold, nanoseconds (None: off).
    pub fn slow_ns(&self) -> Option<u64> {
        match self.slow_ns.load(Relaxed) {
            SLOW_OFF => None,
            ns => Some(ns),
        }
    }

    /// Sets the slow-call threshold in milliseconds (None: off; at most
    /// [`MAX_SLOW_MS`], which the caller checks).
    pub fn set_slow_ms(&self, ms: Option<u64>) {
        let ns = ms.map_or(SLOW_OFF, |ms| ms.min(MAX_SLOW_MS) * NS_PER_MS);
        self.slow_ns.store(ns, Relaxed);
    }

    /// Whether a slow call seen at `now_ns` may be logged, and if so how many
    /// were not logged since the last line: at most [`SLOW_LINES_PER_S`] lines
    /// in any one-second window.
    pub fn slow_line_allowed(&self, now_ns: u64) -> Option<u64> {
        if now_ns.saturating_sub(self.slow_window_ns.load(Relaxed)) >= NS_PER_S {
            self.slow_window_ns.store(now_ns, Relaxed);
            self.slow_lines.store(0, Relaxed);
        }
        if self.slow_lines.load(Relaxed) >= SLOW_LINES_PER_S {
            bump(&self.slow_suppressed, 1);
            return None;
        }
        bump(&self.slow_lines, 1);
        Some(self.slow_suppressed.swap(0, Relaxed))
    }

    /// The figures as one msgpack map (docs/metrics.md, "stats()"):
    ///
    /// ```text
    /// {latency_bounds_s = [2.5e-05, ...], slow_ms = n | nil,
    ///  procs = {<name> = {calls = n, errors = {[code] = n, other = n},
    ///                     latency_buckets = [n, ...], latency_sum_s = x}}}
    /// ```
    ///
    /// `latency_buckets` has one count per bound and one above the last, not
    /// cumulative. A procedure is listed once it has been called.
    pub fn encode(&self) -> Vec<u8> {
        use rmp::encode::{write_f64, write_map_len, write_nil, write_uint};
        let mut out = Vec::with_capacity(1024);
        // Writes to a Vec never fail (a failed allocation aborts).
        let _ = write_map_len(&mut out, 3);
        put_str(&mut out, "latency_bounds_s");
        let _ = rmp::encode::write_array_len(&mut out, LATENCY_BOUNDS_US.len() as u32);
        for us in LATENCY_BOUNDS_US {
            let _ = write_f64(&mut out, us as f64 / 1e6);
        }
        put_str(&mut out, "slow_ms");
        match self.slow_ns() {
            Some(ns) => {
                let _ = write_uint(&mut out, ns / NS_PER_MS);
            }
            None => {
                let _ = write_nil(&mut out);
            }
        }
        put_str(&mut out, "procs");
        let called: Vec<Proc> = Proc::ALL
            .iter()
            .copied()
            .filter(|&p| {
                self.calls
                    .get(p as usize)
                    .is_some_and(|c| c.load(Relaxed) > 0)
            })
            .collect();
        let _ = write_map_len(&mut out, called.len() as u32);
        for proc in called {
            let p = proc as usize;
            let load = |c: Option<&AtomicU64>| c.map_or(0, |c| c.load(Relaxed));
            put_str(&mut out, proc.name());
            let _ = write_map_len(&mut out, 4);
            put_str(&mut out, "calls");
            let _ = write_uint(&mut out, load(self.calls.get(p)));
            put_str(&mut out, "errors");
            let (other, slots) = self
                .errors
                .get(p)
                .and_then(|s| s.split_last())
                .map_or((0, &[][..]), |(o, s)| (o.count.load(Relaxed), s));
            let used = slots
                .iter()
                .take_while(|s| s.code_plus_one.load(Relaxed) != 0)
                .count();
            let _ = write_map_len(&mut out, (used + usize::from(other > 0)) as u32);
            for slot in slots.iter().take(used) {
                let code = slot.code_plus_one.load(Relaxed).saturating_sub(1);
                let _ = write_uint(&mut out, code);
                let _ = write_uint(&mut out, slot.count.load(Relaxed));
            }
            if other > 0 {
                put_str(&mut out, "other");
                let _ = write_uint(&mut out, other);
            }
            put_str(&mut out, "latency_buckets");
            let _ = rmp::encode::write_array_len(&mut out, BUCKETS as u32);
            for count in self.latency.get(p).map_or(&[][..], |b| &b[..]) {
                let _ = write_uint(&mut out, count.load(Relaxed));
            }
            put_str(&mut out, "latency_sum_s");
            let _ = write_f64(&mut out, load(self.latency_sum_ns.get(p)) as f64 / 1e9);
        }
        out
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new()
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let _ = rmp::encode::write_str(out, s);
}

/// This copy's pointer to the process's block (null: not looked up yet).
static SHARED: AtomicPtr<Counters> = AtomicPtr::new(std::ptr::null_mut());

/// The block of a copy that could not reach the Lua state (none in a server:
/// the unit tests). Never shared, never dropped.
static LOCAL: Counters = Counters::new();

/// Finds the process's block under `key` in `package.loaded`, or returns nil.
#[cfg_attr(test, allow(dead_code))]
const FIND: &str = "local v = package.loaded[...] if type(v) == 'number' then return v end";
/// Publishes a new block's address under `key`.
#[cfg_attr(test, allow(dead_code))]
const PUBLISH: &str = "local key, addr = ... package.loaded[key] = addr";

/// The name of the block in `package.loaded`: its layout, so that only builds
/// that agree on it share one.
#[cfg_attr(test, allow(dead_code))]
fn layout_key() -> String {
    let names: Vec<&str> = Proc::ALL.iter().map(|p| p.name()).collect();
    format!(
        "dialogs.native_stats/v{LAYOUT_VERSION}/{}/{:?}/{ERROR_SLOTS}",
        names.join(","),
        LATENCY_BOUNDS_US
    )
}

/// Addresses travel through Lua as numbers: exact below 2^53, as every user
/// space address on the platforms Tarantool runs on is.
const MAX_EXACT_ADDRESS: f64 = 9_007_199_254_740_992.0;

/// The process's block: found, or made and published, at a copy's first call.
#[inline]
pub fn counters() -> &'static Counters {
    let p = SHARED.load(Relaxed);
    if !p.is_null() {
        // SAFETY: a non-null SHARED is a leaked, never freed block (below).
        return unsafe { &*p };
    }
    first_counters()
}

/// [`counters`] at a copy's first call.
#[cold]
#[inline(never)]
fn first_counters() -> &'static Counters {
    let found = find_or_publish().unwrap_or(std::ptr::addr_of!(LOCAL).cast_mut());
    SHARED.store(found, Relaxed);
    // SAFETY: either a leaked, never freed block or the LOCAL static.
    unsafe { &*found }
}

/// The block at `addr`, a number read back from Lua, if it can be one: a
/// positive whole number, exact as a double, aligned for a block.
fn block_at(addr: f64) -> Option<*mut Counters> {
    let exact = addr > 0.0 && addr < MAX_EXACT_ADDRESS && addr.fract() == 0.0;
    let aligned = (addr as u64).is_multiple_of(std::mem::align_of::<Counters>() as u64);
    (exact && aligned).then_some(addr as u64 as usize as *mut Counters)
}

#[cfg(not(test))]
fn find_or_publish() -> Option<*mut Counters> {
    let lua = tarantool::lua_state();
    let key = layout_key();
    if let Ok(Some(addr)) = lua.eval_with::<_, Option<f64>>(FIND, key.as_str()) {
        return block_at(addr);
    }
    let block: &'static mut Counters = Box::leak(Box::new(Counters::new()));
    let addr = std::ptr::addr_of_mut!(*block);
    let as_number = addr as usize as f64;
    lua.exec_with(PUBLISH, (key.as_str(), as_number)).ok()?;
    Some(addr)
}

#[cfg(test)]
fn find_or_publish() -> Option<*mut Counters> {
    None
}

/// The monotonic clock, nanoseconds: Tarantool's own (CLOCK_MONOTONIC, one
/// clock for every copy of the library). Against std's `Instant` on the same
/// clock, 50 to 90 fewer instructions per call (valgrind, docs/metrics.md,
/// "Cost"): no `timespec` subtraction and its checks.
#[inline(always)]
fn now_ns() -> u64 {
    tarantool::clock::monotonic64()
}

/// One call being counted: made at entry, ended at exit.
pub struct Call {
    proc: Proc,
    started_ns: u64,
}

impl Call {
    /// At a procedure's entry.
    #[inline]
    pub fn start(proc: &'static str) -> Call {
        Call {
            proc: Proc::of(proc),
            started_ns: now_ns(),
        }
    }

    /// At its exit: counts the call, and logs it if it was slow. `args` are the
    /// call's msgpack arguments; `code` its error code (None: success).
    #[inline]
    pub fn end(self, args: &[u8], code: Option<u32>) {
        if !self.proc.counted() {
            return;
        }
        let ns = now_ns().saturating_sub(self.started_ns);
        let counters = counters();
        counters.record(self.proc, ns, code);
        if let Some(threshold) = counters.slow_ns() {
            if ns >= threshold {
                log_slow(counters, self.proc, args, ns, threshold, code);
            }
        }
    }
}

/// Logs a slow call, within the rate limit.
#[cold]
#[inline(never)]
fn log_slow(
    counters: &Counters,
    proc: Proc,
    args: &[u8],
    ns: u64,
    threshold_ns: u64,
    code: Option<u32>,
) {
    if let Some(suppressed) = counters.slow_line_allowed(now_ns()) {
        let line = slow_line(proc, args, ns, threshold_ns, code, suppressed);
        #[cfg(not(test))]
        tarantool::say_warn!("{line}");
        #[cfg(test)]
        drop(line);
    }
}

/// The slow-call line: the procedure, the time, the outcome and the sizes of
/// the arguments; never their content (a message's text is private; its length
/// in characters is given).
pub fn slow_line(
    proc: Proc,
    args: &[u8],
    ns: u64,
    threshold_ns: u64,
    code: Option<u32>,
    suppressed: u64,
) -> String {
    let outcome = match code {
        None => "ok".to_owned(),
        Some(code) => format!("error {code}"),
    };
    let mut line = format!(
        "dialogs: slow call: {} took {:.3} ms (threshold {} ms), {outcome}; {}",
        proc.name(),
        ns as f64 / 1e6,
        threshold_ns / NS_PER_MS,
        describe_args(proc, args)
    );
    if suppressed > 0 {
        line.push_str(&format!(
            "; {suppressed} more slow calls were not logged before this one (at most \
             {SLOW_LINES_PER_S} lines a second)"
        ));
    }
    line
}

/// "arguments 4 (16, 36, 36, 100 bytes), text 100 characters": how many
/// arguments, each one's encoded size, and for a message the text's length.
fn describe_args(proc: Proc, args: &[u8]) -> String {
    let mut r = Reader::new(args);
    let Ok(Value::Array(count)) = r.read() else {
        return format!("arguments unreadable ({} bytes)", args.len());
    };
    let mut sizes = Vec::new();
    let mut text_chars = None;
    for i in 0..count {
        let before = r.rest();
        let Some(value) = skip_value(&mut r) else {
            return format!("arguments unreadable ({} bytes)", args.len());
        };
        sizes.push((before.len() - r.rest().len()).to_string());
        // new_dialog's text is its 4th argument; the storage entry's is the 4th
        // of its 2nd (bucket_id, args).
        let text = match (proc, i) {
            (Proc::NewDialog, 3) => text_of(value),
            (Proc::StorageNew, 1) => {
                let inner = before.get(..before.len() - r.rest().len()).unwrap_or(&[]);
                nth_text(inner, 3)
            }
            _ => None,
        };
        text_chars = text_chars.or(text);
    }
    let mut out = if sizes.is_empty() {
        "no arguments".to_owned()
    } else {
        format!("arguments {count} ({} bytes)", sizes.join(", "))
    };
    if let Some(chars) = text_chars {
        out.push_str(&format!(", text {chars} characters"));
    }
    out
}

/// The text's length in characters, of a string value (bytes if not UTF-8).
fn text_of(value: Value<'_>) -> Option<usize> {
    match value {
        Value::Str(bytes) => {
            Some(std::str::from_utf8(bytes).map_or(bytes.len(), |s| s.chars().count()))
        }
        _ => None,
    }
}

/// The length of the text that is element `n` of the msgpack array `buf`.
fn nth_text(buf: &[u8], n: u32) -> Option<usize> {
    let mut r = Reader::new(buf);
    let Ok(Value::Array(count)) = r.read() else {
        return None;
    };
    for i in 0..count {
        let value = skip_value(&mut r)?;
        if i == n {
            return text_of(value);
        }
    }
    None
}

/// Reads one whole value (an array or map with everything in it); returns its
/// header, or None for input that is not msgpack.
fn skip_value<'a>(r: &mut Reader<'a>) -> Option<Value<'a>> {
    let first = r.read().ok()?;
    let mut pending: u64 = 0;
    let add = |v: &Value<'_>| match *v {
        Value::Array(n) => u64::from(n),
        Value::Map(n) => 2 * u64::from(n),
        _ => 0,
    };
    pending += add(&first);
    while pending > 0 {
        let v = r.read().ok()?;
        pending = pending - 1 + add(&v);
    }
    Some(first)
}

/// `dialogs_stats()`: the figures ([`Counters::encode`]).
pub fn stats_call(args: &[u8], reply: &mut crate::Reply) -> crate::error::Result<()> {
    crate::args::Args::open("dialogs_stats", args, 0, 0, "no arguments")?;
    reply.mp(&counters().encode())
}

/// `dialogs_slow_calls(ms)`: sets the slow-call threshold, milliseconds, 0 to
/// [`MAX_SLOW_MS`]; nil turns the log off. Replies with the threshold now set.
pub fn slow_calls_call(args: &[u8], reply: &mut crate::Reply) -> crate::error::Result<()> {
    use crate::error::Arg;
    let mut a = crate::args::Args::open(
        "dialogs_slow_calls",
        args,
        1,
        1,
        "1 argument (milliseconds, or nil for off)",
    )?;
    let ms = match a.read()? {
        Value::Nil => None,
        v => Some(crate::args::integer(Arg::SlowMs, v, 0, MAX_SLOW_MS)?),
    };
    let counters = counters();
    counters.set_slow_ms(ms);
    let mut out = Vec::new();
    match counters.slow_ns() {
        Some(ns) => {
            let _ = rmp::encode::write_uint(&mut out, ns / NS_PER_MS);
        }
        None => {
            let _ = rmp::encode::write_nil(&mut out);
        }
    }
    reply.mp(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &p in Proc::ALL {
            if p != Proc::Other {
                assert_eq!(Proc::of(p.name()), p);
            }
        }
        assert_eq!(Proc::of("nope"), Proc::Other);
    }

    #[test]
    fn the_block_is_named_by_its_layout() {
        let key = layout_key();
        assert!(
            key.starts_with("dialogs.native_stats/v1/new_dialog,get_dialog,"),
            "{key}"
        );
        assert!(key.contains("10000000]/24"), "{key}");
        assert_eq!(block_at(4096.0), Some(4096 as *mut Counters));
        for bad in [0.0, -8.0, 4096.5, 4097.0, 1e300, f64::NAN] {
            assert_eq!(block_at(bad), None, "{bad}");
        }
    }

    #[test]
    fn counts_calls_errors_and_buckets() {
        let c = Counters::new();
        c.record(Proc::NewDialog, 10_000, None); // 10 µs: the first bucket
        c.record(Proc::NewDialog, 25_000, Some(1004)); // exactly 25 µs: still the first
        c.record(Proc::NewDialog, 25_001, Some(1004));
        c.record(Proc::NewDialog, u64::MAX, Some(1002)); // past every bound
        let p = Proc::NewDialog as usize;
        assert_eq!(c.calls[p].load(Relaxed), 4);
        assert_eq!(c.latency[p][0].load(Relaxed), 2);
        assert_eq!(c.latency[p][1].load(Relaxed), 1);
        assert_eq!(c.latency[p][BUCKETS - 1].load(Relaxed), 1);
        assert_eq!(c.errors[p][0].code_plus_one.load(Relaxed), 1005);
        assert_eq!(c.errors[p][0].count.load(Relaxed), 2);
        assert_eq!(c.errors[p][1].code_plus_one.load(Relaxed), 1003);
        assert_eq!(c.calls[Proc::GetDialog as usize].load(Relaxed), 0);
    }

    #[test]
    fn codes_beyond_the_slots_add_up_as_other() {
        let c = Counters::new();
        for code in 0..(ERROR_SLOTS as u32 + 5) {
            c.record(Proc::GetDialog, 1, Some(code));
        }
        let map = rmpv::decode::read_value(&mut &c.encode()[..]).unwrap();
        let procs = &map["procs"]["get_dialog"]["errors"];
        let entries = procs.as_map().unwrap();
        assert_eq!(entries.len(), ERROR_SLOTS);
        let other = entries
            .iter()
            .find(|(k, _)| k.as_str() == Some("other"))
            .unwrap();
        assert_eq!(other.1.as_u64(), Some(6));
    }

    #[test]
    fn encodes_the_documented_map() {
        let c = Counters::new();
        c.record(Proc::GetDialog, 2_000_000, None);
        c.record(Proc::GetDialog, 60, Some(1003));
        c.set_slow_ms(Some(5));
        let map = rmpv::decode::read_value(&mut &c.encode()[..]).unwrap();
        assert_eq!(map["slow_ms"].as_u64(), Some(5));
        assert_eq!(
            map["latency_bounds_s"].as_array().unwrap().len(),
            LATENCY_BOUNDS_US.len()
        );
        let g = &map["procs"]["get_dialog"];
        assert_eq!(g["calls"].as_u64(), Some(2));
        assert_eq!(map["procs"].as_map().unwrap().len(), 1);
        let buckets: Vec<u64> = g["latency_buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(buckets.len(), BUCKETS);
        assert_eq!(buckets.iter().sum::<u64>(), 2);
        assert_eq!(buckets[0], 1);
        assert_eq!(buckets[6], 1); // 2 ms: the 2.5 ms bucket
        let errors = g["errors"].as_map().unwrap();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0.as_u64(), Some(1003));
        c.set_slow_ms(None);
        let map = rmpv::decode::read_value(&mut &c.encode()[..]).unwrap();
        assert!(map["slow_ms"].is_nil());
    }

    #[test]
    fn slow_lines_are_rate_limited() {
        let c = Counters::new();
        let t0 = 5 * NS_PER_S;
        for i in 0..SLOW_LINES_PER_S {
            assert_eq!(c.slow_line_allowed(t0 + i), Some(0));
        }
        assert_eq!(c.slow_line_allowed(t0 + 100), None);
        assert_eq!(c.slow_line_allowed(t0 + 200), None);
        // The next window: logged again, with the two it left out.
        assert_eq!(c.slow_line_allowed(t0 + NS_PER_S), Some(2));
        assert_eq!(c.slow_line_allowed(t0 + NS_PER_S + 1), Some(0));
    }

    #[test]
    fn slow_line_tells_sizes_never_the_text() {
        use crate::msgpack::Write;
        let mut args = Vec::new();
        args.put_array_header(4);
        args.put_str("key");
        args.put_uuid(&uuid::Uuid::from_bytes([1; 16]));
        args.put_uuid(&uuid::Uuid::from_bytes([2; 16]));
        args.put_str("héllo secret");
        let line = slow_line(Proc::NewDialog, &args, 12_345_678, 10 * NS_PER_MS, None, 0);
        assert_eq!(
            line,
            "dialogs: slow call: new_dialog took 12.346 ms (threshold 10 ms), ok; \
             arguments 4 (4, 18, 18, 14 bytes), text 12 characters"
        );
        let mut wrapped = Vec::new();
        wrapped.put_array_header(2);
        wrapped.put_uint(7);
        wrapped.extend_from_slice(&args);
        let line = slow_line(Proc::StorageNew, &wrapped, NS_PER_MS, 0, Some(1004), 3);
        assert!(line.contains("error 1004"), "{line}");
        assert!(
            line.contains("arguments 2 (1, 55 bytes), text 12 characters"),
            "{line}"
        );
        assert!(line.contains("3 more slow calls"), "{line}");
        assert!(!line.contains("secret"));
        let line = slow_line(Proc::GetDialog, &[0x90], 0, 0, None, 0);
        assert!(line.ends_with("ok; no arguments"), "{line}");
        let line = slow_line(Proc::GetDialog, &[0x91], 0, 0, None, 0);
        assert!(line.ends_with("arguments unreadable (1 bytes)"), "{line}");
    }
}
