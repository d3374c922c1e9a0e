//! The results, one set per server version: bench/results/tarantool-<version>.md
//! (tables and the targets with the measured ratios), .json (everything),
//! .svg (the chart), e.g. tarantool-2.6.0.md and tarantool-3.8.0.md side by side.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::chart;
use crate::data::TEXT_CHARS;
use crate::model::{CellResult, Durability, Mode, Target, Workload};
use crate::pg::PgMemory;
use crate::tt::{get, get_f64};
use crate::Plan;

/// Nanoseconds per call inside the server: the fastest round, and the wall time of
/// every round in round order (the rounds of all measurements are interleaved).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PerCall {
    pub wall_ns: f64,
    pub cpu_ns: f64,
    #[serde(default)]
    pub wall_ns_rounds: Vec<f64>,
}

/// The in-process micro-benchmark (bench_micro in bench/lua/bench.lua).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Micro {
    pub native_write: PerCall,
    pub lua_write: PerCall,
    pub native_page: PerCall,
    pub lua_page: PerCall,
    pub noop: PerCall,
    /// The same 50 tuples selected in Lua with no function: the cost of
    /// receiving them in Lua, paid by both get_dialog calls.
    #[serde(default)]
    pub page_floor: Option<PerCall>,
}

impl Micro {
    pub fn from_value(v: &rmpv::Value) -> Result<Micro> {
        let pc = |k: &str| -> Result<PerCall> {
            let m = get(v, k)?;
            let rounds = get(m, "wall_ns_rounds")?
                .as_array()
                .ok_or_else(|| anyhow::anyhow!("`{k}.wall_ns_rounds` is not an array"))?
                .iter()
                .map(|r| {
                    r.as_f64()
                        .or_else(|| r.as_i64().map(|i| i as f64))
                        .ok_or_else(|| anyhow::anyhow!("`{k}.wall_ns_rounds`: {r}"))
                })
                .collect::<Result<Vec<f64>>>()?;
            Ok(PerCall {
                wall_ns: get_f64(m, "wall_ns")?,
                cpu_ns: get_f64(m, "cpu_ns")?,
                wall_ns_rounds: rounds,
            })
        };
        Ok(Micro {
            native_write: pc("native_write")?,
            lua_write: pc("lua_write")?,
            native_page: pc("native_page")?,
            lua_page: pc("lua_page")?,
            noop: pc("noop")?,
            page_floor: pc("page_floor").ok(),
        })
    }
}

/// What each get_dialog adds to the floor of receiving its 50 tuples in Lua, as
/// measured: from the fastest rounds, and round by round (the spread). A
/// difference may come out negative when the noise exceeds it; it is reported so,
/// never clamped.
pub struct AboveFloor {
    pub native_ns: f64,
    pub lua_ns: f64,
    /// native ÷ lua above the floor; None when lua's part is not above zero.
    pub ratio: Option<f64>,
    /// The same ratio in each round (rounds whose lua part is above zero).
    pub round_ratios: Vec<f64>,
    native_has_rounds: bool,
}

impl AboveFloor {
    pub fn of(native: &PerCall, lua: &PerCall, floor: &PerCall) -> AboveFloor {
        let ratio = |n: f64, l: f64| (l > 0.0).then(|| n / l);
        let (native_ns, lua_ns) = (native.wall_ns - floor.wall_ns, lua.wall_ns - floor.wall_ns);
        let round_ratios = native
            .wall_ns_rounds
            .iter()
            .zip(&lua.wall_ns_rounds)
            .zip(&floor.wall_ns_rounds)
            .filter_map(|((n, l), f)| ratio(n - f, l - f))
            .collect();
        AboveFloor {
            native_ns,
            lua_ns,
            ratio: ratio(native_ns, lua_ns),
            round_ratios,
            native_has_rounds: !native.wall_ns_rounds.is_empty(),
        }
    }

    /// "rounds: a to b (n rounds)", or why there is no spread.
    pub fn spread(&self) -> String {
        let lo = self
            .round_ratios
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let hi = self
            .round_ratios
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        match self.round_ratios.len() {
            0 if self.native_has_rounds => "no round with lua above the floor".into(),
            0 => "rounds not recorded".into(),
            n => format!("native ÷ lua round by round: {lo:.2} to {hi:.2} ({n} rounds)"),
        }
    }
}

/// Growth of the `dialogs` space for the memory test's messages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TtMemory {
    pub tuples: f64,
    pub space_bsize: f64,
    pub index_bsize: f64,
    pub items_used: f64,
    pub arena_used: f64,
}

impl TtMemory {
    pub fn from_value(v: &rmpv::Value) -> Result<TtMemory> {
        Ok(TtMemory {
            tuples: get_f64(v, "tuples")?,
            space_bsize: get_f64(v, "space_bsize")?,
            index_bsize: get_f64(v, "index_bsize")?,
            items_used: get_f64(v, "items_used")?,
            arena_used: get_f64(v, "arena_used")?,
        })
    }
}

/// Growth of the inbox for new dialogs of one message each (bench_inbox_memory
/// in bench/lua/bench.lua): each message adds two entries and a totals row or two.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InboxMemory {
    pub messages: f64,
    /// The messages' own space and index bsize.
    pub message_bytes: f64,
    pub entries: f64,
    pub entry_space_bsize: f64,
    pub entry_index_bsize: f64,
    pub totals: f64,
    pub totals_space_bsize: f64,
    pub totals_index_bsize: f64,
    pub items_used: f64,
    pub arena_used: f64,
}

impl InboxMemory {
    pub fn from_value(v: &rmpv::Value) -> Result<InboxMemory> {
        Ok(InboxMemory {
            messages: get_f64(v, "messages")?,
            message_bytes: get_f64(v, "message_bytes")?,
            entries: get_f64(v, "entries")?,
            entry_space_bsize: get_f64(v, "entry_space_bsize")?,
            entry_index_bsize: get_f64(v, "entry_index_bsize")?,
            totals: get_f64(v, "totals")?,
            totals_space_bsize: get_f64(v, "totals_space_bsize")?,
            totals_index_bsize: get_f64(v, "totals_index_bsize")?,
            items_used: get_f64(v, "items_used")?,
            arena_used: get_f64(v, "arena_used")?,
        })
    }

    /// Bytes per inbox entry: its tuple and its share of the three indexes.
    pub fn per_entry(&self) -> f64 {
        (self.entry_space_bsize + self.entry_index_bsize) / self.entries.max(1.0)
    }

    /// Bytes per totals row, the same way.
    pub fn per_totals_row(&self) -> f64 {
        (self.totals_space_bsize + self.totals_index_bsize) / self.totals.max(1.0)
    }
}

/// One row of the inbox's cost table: its name, the cell divided by the other,
/// the figure taken of each, and the goal ("≤ x", or "(recorded)").
type InboxRow = (
    &'static str,
    (Target, Workload),
    (Target, Workload),
    fn(&CellResult) -> f64,
    &'static str,
);

/// The median and the range of `v` (None when empty).
fn median_range(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some((median, s[0], s[n - 1]))
}

#[derive(Serialize, Deserialize)]
pub struct Report {
    pub plan: Plan,
    pub date: String,
    pub machine: String,
    pub tarantool_version: String,
    pub pg_version: Option<String>,
    pub wall_seconds: f64,
    /// /proc/loadavg at the start and at the end: other work on the machine.
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub cells: Vec<CellResult>,
    pub micro: Option<Micro>,
    pub tt_memory: Option<TtMemory>,
    pub pg_memory: Option<PgMemory>,
    /// The inbox's memory (a build with the inbox, not a --cells-only run).
    #[serde(default)]
    pub inbox_memory: Option<InboxMemory>,
    /// What the `sharded` target ran on, or why it did not run.
    #[serde(default)]
    pub sharded: Option<String>,
    /// The arguments the run was given (`dialogs-bench --rounds 5 ...`); empty in
    /// reports written before it was recorded.
    #[serde(default)]
    pub command: String,
}

fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{model}, {cores} cores")
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `tarantool-<release>` from a version string such as `3.8.0-0-gdce7be8a79`:
/// what precedes the first `-`, keeping only file-name-safe characters.
pub fn stem_of(version: &str) -> String {
    let release: String = version
        .split('-')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
        .collect();
    if release.is_empty() {
        "tarantool-unknown".into()
    } else {
        format!("tarantool-{release}")
    }
}

/// The concurrency at which the issue states its single-number targets (the
/// report's 50 threads).
const TARGET_C: usize = 50;

impl Report {
    pub fn new(plan: Plan) -> Report {
        Report {
            plan,
            date: today(),
            machine: machine(),
            tarantool_version: String::new(),
            pg_version: None,
            wall_seconds: 0.0,
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
            cells: Vec::new(),
            micro: None,
            tt_memory: None,
            pg_memory: None,
            inbox_memory: None,
            sharded: None,
            command: std::iter::once("dialogs-bench".to_owned())
                .chain(std::env::args().skip(1))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    pub fn find(
        &self,
        t: Target,
        w: Workload,
        m: Mode,
        d: Durability,
        c: usize,
    ) -> Option<&CellResult> {
        // noop is measured once per C (filed under `read`): the same empty call.
        let w = if t == Target::Noop { Workload::Read } else { w };
        // A run of several rounds (--rounds) has one result per round: the round
        // with the median server CPU per call stands for the cell.
        let mut rounds: Vec<&CellResult> = self
            .cells
            .iter()
            .filter(|r| {
                r.cell.target == t
                    && r.cell.workload == w
                    && r.cell.mode == m
                    && r.cell.durability == d
                    && r.cell.concurrency == c
            })
            .collect();
        rounds.sort_by(|a, b| a.server_cpu_us.total_cmp(&b.server_cpu_us));
        rounds.get(rounds.len() / 2).copied()
    }

    /// Every round's result of one cell (`conns` mode, wal_mode=write) at C, in
    /// the order they ran: round k of one cell ran beside round k of the others.
    fn rounds(&self, t: Target, w: Workload, c: usize) -> Vec<&CellResult> {
        self.cells
            .iter()
            .filter(|r| {
                r.cell.target == t
                    && r.cell.workload == w
                    && r.cell.mode == Mode::Conns
                    && r.cell.durability == Durability::Write
                    && r.cell.concurrency == c
            })
            .collect()
    }

    /// `f(a) ÷ f(b)` round by round at C (rounds where both ran and b is above 0).
    fn round_ratios(
        &self,
        a: (Target, Workload),
        b: (Target, Workload),
        c: usize,
        f: fn(&CellResult) -> f64,
    ) -> Vec<f64> {
        self.rounds(a.0, a.1, c)
            .iter()
            .zip(self.rounds(b.0, b.1, c))
            .filter(|(_, y)| f(y) > 0.0)
            .map(|(x, y)| f(x) / f(y))
            .collect()
    }

    /// The inbox's costs against the goals (issue 19, point 5), each a
    /// ratio taken round by round between cells that ran side by side, then
    /// the median and range over the rounds; and the server CPU of each cell.
    fn inbox_section(&self, out: &mut String) {
        let c = self.target_c();
        let ran = |t, w| !self.rounds(t, w, c).is_empty();
        if !(ran(Target::Native, Workload::List)
            || ran(Target::Native, Workload::Mark)
            || ran(Target::Base, Workload::Write)
            || ran(Target::Sharded, Workload::List)
            || ran(Target::ShardedBase, Workload::Write))
        {
            return;
        }
        let cpu = |r: &CellResult| r.server_cpu_us;
        let storages = |r: &CellResult| r.server_cpu_us - r.router_cpu_us.unwrap_or(0.0);
        let _ = writeln!(
            out,
            "## The inbox: its cost per call\n\n\
             Server CPU per call at C={c} connections; each ratio is taken round by \
             round between cells that ran one after the other in that round, then the \
             median and the range over the rounds. `base` and `sharded-base` are the \
             earlier build given with `--base-repo` (no inbox), on a server of their \
             own, run in the same rounds. A `mark` cell reads, up to its newest \
             message, dialogs that a seeding step gave a new message just before the \
             cell (outside its CPU sample): every call moves a cursor, with no message \
             stored in the window. A sharded cell's sample includes the delivery of \
             its own outbox rows: it opens and closes on empty outboxes.\n\n\
             | cost | goal | median | range | rounds |\n|---|---|---:|---|---:|"
        );
        let rows: [InboxRow; 9] = [
            (
                "`new_dialog` with inbox upkeep ÷ without (`native` ÷ `base`, `write`)",
                (Target::Native, Workload::Write),
                (Target::Base, Workload::Write),
                cpu,
                "≤ 1.3",
            ),
            (
                "`list_dialogs` of 20 ÷ `get_dialog` of 20 messages (`list` ÷ `read`, native)",
                (Target::Native, Workload::List),
                (Target::Native, Workload::Read),
                cpu,
                "≤ 1",
            ),
            (
                "`mark_read` ÷ `new_dialog` (`mark` ÷ `write`, native)",
                (Target::Native, Workload::Mark),
                (Target::Native, Workload::Write),
                cpu,
                "≤ 1",
            ),
            (
                "`list_dialogs` of 20 ÷ its plain SELECT (`native` ÷ `raw`, `list`)",
                (Target::Native, Workload::List),
                (Target::Raw, Workload::List),
                cpu,
                "(recorded)",
            ),
            (
                "`get_dialog` of 20 now ÷ before (`native` ÷ `base`, `read`)",
                (Target::Native, Workload::Read),
                (Target::Base, Workload::Read),
                cpu,
                "(recorded)",
            ),
            (
                "sharded `new_dialog` with the outbox ÷ without (`sharded` ÷ `sharded-base`, `write`, router + storages)",
                (Target::Sharded, Workload::Write),
                (Target::ShardedBase, Workload::Write),
                cpu,
                "(recorded)",
            ),
            (
                "the same, storages only",
                (Target::Sharded, Workload::Write),
                (Target::ShardedBase, Workload::Write),
                storages,
                "(recorded)",
            ),
            (
                "sharded `list_dialogs` of 20 ÷ `get_dialog` of 20 (`list` ÷ `read`)",
                (Target::Sharded, Workload::List),
                (Target::Sharded, Workload::Read),
                cpu,
                "(recorded)",
            ),
            (
                "sharded `mark_read` ÷ `new_dialog` (`mark` ÷ `write`)",
                (Target::Sharded, Workload::Mark),
                (Target::Sharded, Workload::Write),
                cpu,
                "(recorded)",
            ),
        ];
        for (name, a, b, f, goal) in rows {
            let rs = self.round_ratios(a, b, c, f);
            let Some((median, lo, hi)) = median_range(&rs) else {
                continue;
            };
            let goal = match goal.strip_prefix("≤ ").and_then(|g| g.parse::<f64>().ok()) {
                Some(g) if median <= g => format!("{goal}: met"),
                Some(_) => format!("{goal}: **not met**"),
                None => goal.to_owned(),
            };
            let _ = writeln!(
                out,
                "| {name} | {goal} | {median:.2} | {lo:.2}–{hi:.2} | {} |",
                rs.len()
            );
        }
        // The outbox's cost per message: the difference, round by round.
        let diffs: Vec<f64> = self
            .rounds(Target::Sharded, Workload::Write, c)
            .iter()
            .zip(self.rounds(Target::ShardedBase, Workload::Write, c))
            .map(|(x, y)| x.server_cpu_us - y.server_cpu_us)
            .collect();
        if let Some((median, lo, hi)) = median_range(&diffs) {
            let _ = writeln!(
                out,
                "| the outbox's server CPU per message, µs (`sharded` − `sharded-base`, `write`) | (recorded) | {median:.1} | {lo:.1}–{hi:.1} | {} |",
                diffs.len()
            );
        }
        let _ = writeln!(
            out,
            "\nServer CPU per call, µs, at C={c}: median over the rounds (range).\n\n\
             | target | workload | server | range | of which router | outbox drained after the window, ms | rounds |\n\
             |---|---|---:|---|---:|---:|---:|"
        );
        for t in Target::ALL {
            for w in Workload::ALL {
                let rounds = self.rounds(t, w, c);
                let cpu_v: Vec<f64> = rounds.iter().map(|r| r.server_cpu_us).collect();
                let Some((median, lo, hi)) = median_range(&cpu_v) else {
                    continue;
                };
                let router: Vec<f64> = rounds.iter().filter_map(|r| r.router_cpu_us).collect();
                let drain: Vec<f64> = rounds.iter().filter_map(|r| r.drain_ms).collect();
                let _ = writeln!(
                    out,
                    "| {t} | {w} | {median:.1} | {lo:.1}–{hi:.1} | {} | {} | {} |",
                    median_range(&router).map_or(String::new(), |m| format!("{:.1}", m.0)),
                    median_range(&drain).map_or(String::new(), |m| format!("{:.0}", m.0)),
                    rounds.len()
                );
            }
        }
        if let Some(m) = &self.inbox_memory {
            let n = m.messages.max(1.0);
            let _ = writeln!(
                out,
                "\n### Memory of the inbox\n\n\
                 {:.0} new dialogs of one {TEXT_CHARS}-character message each, between new \
                 users, stored through `new_dialog`: {:.0} inbox entries (the message's \
                 text as their last text) and {:.0} totals rows (a user with nothing \
                 unread may have none). Bytes, memtx \
                 (`space:bsize()` + every index's `bsize()`):\n\n\
                 | what | bytes |\n|---|---:|\n\
                 | an inbox entry (tuple + `pk`, `activity`; on a vshard storage also `bucket_id`) | {:.0} |\n\
                 | a totals row (tuple + `pk`; on a vshard storage also `bucket_id`) | {:.0} |\n\
                 | a new dialog's message (for comparison) | {:.0} |\n\
                 | memtx arena growth per new dialog (its message, its entries and totals rows; slab rounding included) | {:.0} |\n",
                m.messages,
                m.entries,
                m.totals,
                m.per_entry(),
                m.per_totals_row(),
                m.message_bytes / n,
                m.arena_used / n
            );
        }
        out.push('\n');
    }

    /// The C at which single-number targets are read: 50, or the nearest run.
    fn target_c(&self) -> usize {
        self.plan
            .conns
            .iter()
            .copied()
            .min_by_key(|c| c.abs_diff(TARGET_C))
            .unwrap_or(TARGET_C)
    }

    /// Reads a report written by `write` (to redraw it with `--replot`).
    pub fn read(json: &Path) -> Result<Report> {
        Ok(serde_json::from_str(&fs::read_to_string(json)?)?)
    }

    /// The name of this server's result files, without extension: `tarantool-`
    /// and the release of the version the server reported (`2.6.0` of
    /// `2.6.0-0-g47aa4e01e`), so runs against different servers sit side by side.
    pub fn stem(&self) -> String {
        stem_of(&self.tarantool_version)
    }

    /// Writes `<stem>.json`, `.md` and `.svg` into `dir`; returns the `.md` path.
    pub fn write(&self, dir: &Path) -> Result<std::path::PathBuf> {
        fs::create_dir_all(dir)?;
        let stem = self.stem();
        fs::write(
            dir.join(format!("{stem}.json")),
            serde_json::to_string_pretty(self)?,
        )?;
        let md = dir.join(format!("{stem}.md"));
        fs::write(&md, self.markdown())?;
        chart::write_svg(self, &dir.join(format!("{stem}.svg")))?;
        Ok(md)
    }

    fn ratio(
        &self,
        a: Target,
        b: Target,
        w: Workload,
        d: Durability,
        f: fn(&CellResult) -> f64,
    ) -> Option<f64> {
        let c = self.target_c();
        let x = self.find(a, w, Mode::Conns, d, c)?;
        let y = self.find(b, w, Mode::Conns, d, c)?;
        let (fx, fy) = (f(x), f(y));
        (fy > 0.0).then(|| fx / fy)
    }

    /// Range of a ratio over every C of the `conns` mode.
    fn ratio_range(&self, a: Target, b: Target, w: Workload, f: fn(&CellResult) -> f64) -> String {
        let rs: Vec<f64> = self
            .plan
            .conns
            .iter()
            .filter_map(|&c| {
                let x = self.find(a, w, Mode::Conns, Durability::Write, c)?;
                let y = self.find(b, w, Mode::Conns, Durability::Write, c)?;
                (f(y) > 0.0).then(|| f(x) / f(y))
            })
            .collect();
        if rs.is_empty() {
            return "-".into();
        }
        let mut sorted = rs.clone();
        sorted.sort_by(f64::total_cmp);
        let median = if sorted.len() % 2 == 1 {
            sorted[sorted.len() / 2]
        } else {
            (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
        };
        format!(
            "median {median:.2} ({:.2}–{:.2})",
            sorted[0],
            sorted[sorted.len() - 1]
        )
    }

    fn targets_table(&self, out: &mut String) {
        let c = self.target_c();
        let cpu = |r: &CellResult| r.server_cpu_us;
        let tput = |r: &CellResult| r.ops_per_sec;
        // The "met" column: `None` when the measurement did not run (a missing
        // measurement is not a miss), else whether it meets its goal.
        let mut rows: Vec<(String, String, String, Option<bool>, String)> = Vec::new();
        let shown = |v: Option<f64>| v.map_or_else(|| "not run".to_owned(), |v| format!("{v:.2}"));
        let verdict = |v: Option<f64>, max: Option<f64>, min: Option<f64>| {
            v.map(|v| max.is_none_or(|m| v <= m) && min.is_none_or(|m| v >= m))
        };
        let total_errors: u64 = self.cells.iter().map(|r| r.errors).sum();
        let max_c = self
            .cells
            .iter()
            .map(|r| r.cell.concurrency)
            .max()
            .unwrap_or(0);
        rows.push((
            format!("errors, every cell up to C={max_c}"),
            shown(Some(total_errors as f64)),
            "0".into(),
            Some(total_errors == 0),
            String::new(),
        ));
        for (w, goal) in [
            (Workload::Write, 1.2),
            (Workload::Read, 1.1),
            (Workload::Page, 1.1),
        ] {
            let v = self.ratio(Target::Native, Target::Raw, w, Durability::Write, cpu);
            rows.push((
                format!("server CPU/call, native ÷ raw, `{w}`"),
                shown(v),
                format!("≤ {goal}"),
                verdict(v, Some(goal), None),
                self.ratio_range(Target::Native, Target::Raw, w, cpu),
            ));
        }
        for (w, goal) in [
            (Workload::Write, 0.8),
            (Workload::Read, 0.9),
            (Workload::Page, 0.9),
        ] {
            let v = self.ratio(Target::Native, Target::Lua, w, Durability::Write, cpu);
            rows.push((
                format!("server CPU/call, native ÷ lua, `{w}`"),
                shown(v),
                format!("≤ {goal}"),
                verdict(v, Some(goal), None),
                self.ratio_range(Target::Native, Target::Lua, w, cpu),
            ));
        }
        for w in [Workload::Write, Workload::Read, Workload::Page] {
            let v = self.ratio(Target::Sharded, Target::Native, w, Durability::Write, cpu);
            rows.push((
                format!("server CPU/call, sharded (router + storages) ÷ native, `{w}`"),
                shown(v),
                "≤ 2".into(),
                verdict(v, Some(2.0), None),
                self.ratio_range(Target::Sharded, Target::Native, w, cpu),
            ));
            let storage = |r: &CellResult| r.server_cpu_us - r.router_cpu_us.unwrap_or(0.0);
            let v = self.ratio(
                Target::Sharded,
                Target::Native,
                w,
                Durability::Write,
                storage,
            );
            rows.push((
                format!("server CPU/call, sharded storages only ÷ native, `{w}`"),
                shown(v),
                "≈ 1 (unchanged): ≤ 1.1".into(),
                verdict(v, Some(1.1), None),
                self.ratio_range(Target::Sharded, Target::Native, w, storage),
            ));
            let v = self
                .find(Target::Sharded, w, Mode::Conns, Durability::Write, c)
                .and_then(|r| {
                    let router = r.router_cpu_us?;
                    (r.server_cpu_us > 0.0).then(|| router / r.server_cpu_us)
                });
            rows.push((
                format!("the router's share of the sharded path's server CPU, `{w}`"),
                shown(v),
                "(recorded)".into(),
                v.map(|_| true),
                String::new(),
            ));
        }
        if let Some(m) = &self.micro {
            for (name, n, l) in [
                ("new_dialog", &m.native_write, &m.lua_write),
                ("get_dialog (50-message page)", &m.native_page, &m.lua_page),
            ] {
                let v = (l.wall_ns > 0.0).then(|| n.wall_ns / l.wall_ns);
                rows.push((
                    format!("in-process ns/call, native ÷ lua, {name}"),
                    shown(v),
                    "≤ 0.5".into(),
                    verdict(v, Some(0.5), None),
                    String::new(),
                ));
            }
        }
        if let Some((m, f)) = self
            .micro
            .as_ref()
            .and_then(|m| Some((m, m.page_floor.as_ref()?)))
        {
            // As measured, negative or not: a procedure measured below its floor
            // means the noise is larger than what it adds, which meets no goal.
            let above = AboveFloor::of(&m.native_page, &m.lua_page, f);
            let (met, spread) = match above.ratio {
                Some(v) if v < 0.0 => (
                    false,
                    format!(
                        "native measured below the floor: not measurable at this noise; {}",
                        above.spread()
                    ),
                ),
                Some(v) => (v <= 0.5, above.spread()),
                None => (
                    false,
                    format!(
                        "no ratio: lua measured {:.0} ns above the floor (native {:.0} ns); {}",
                        above.lua_ns,
                        above.native_ns,
                        above.spread()
                    ),
                ),
            };
            rows.push((
                "in-process, get_dialog above the floor of receiving 50 tuples in Lua, native ÷ lua".into(),
                above.ratio.map_or_else(|| "undefined".to_owned(), |v| format!("{v:.2}")),
                "≤ 0.5 (same goal, floor removed)".into(),
                Some(met),
                spread,
            ));
        }
        for (w, d, what) in [
            (
                Workload::Write,
                Durability::Write,
                "wal_mode=write vs synchronous_commit=off",
            ),
            (Workload::Read, Durability::Write, "reads"),
            (
                Workload::Write,
                Durability::Fsync,
                "wal_mode=fsync vs synchronous_commit=on",
            ),
        ] {
            let v = self.ratio(Target::Native, Target::Pg, w, d, tput);
            rows.push((
                format!("throughput, native ÷ pg, `{w}`, {what}"),
                shown(v),
                "≥ 5".into(),
                verdict(v, None, Some(5.0)),
                String::new(),
            ));
        }
        for w in [Workload::Read, Workload::Write] {
            let v = self
                .find(Target::Native, w, Mode::Conns, Durability::Write, c)
                .map(|r| r.p99_ms);
            rows.push((
                format!("p99 of native `{w}`, ms"),
                shown(v),
                "< 2".into(),
                v.map(|v| v < 2.0),
                String::new(),
            ));
        }
        let _ = writeln!(
            out,
            "| target (issue #3), at C={c} connections unless noted | measured | goal | met | over every C of `conns` |\n|---|---:|---|---|---|"
        );
        for (name, v, goal, ok, range) in rows {
            let ok = match ok {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not run",
            };
            let _ = writeln!(out, "| {name} | {v} | {goal} | {ok} | {range} |");
        }
    }

    fn cell_table(&self, out: &mut String, workload: Workload, durability: Durability) {
        let _ = writeln!(
            out,
            "| target | mode | C | ops/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU µs/call | of which router | client CPU µs/call | outbox drained after, ms |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let mut rows: Vec<&CellResult> = self
            .cells
            .iter()
            .filter(|r| {
                r.cell.durability == durability
                    && (r.cell.workload == workload
                        || (r.cell.target == Target::Noop && durability == Durability::Write))
            })
            .collect();
        rows.sort_by_key(|r| {
            (
                r.cell.mode.name(),
                r.cell.concurrency,
                Target::ALL.iter().position(|t| *t == r.cell.target),
            )
        });
        for r in rows {
            let name = if r.cell.target == Target::Noop {
                "noop (empty call)".to_owned()
            } else {
                r.cell.target.to_string()
            };
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {:.1} | {} | {:.1} | {} |",
                r.cell.mode.name(),
                r.cell.concurrency,
                r.ops_per_sec,
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.errors,
                r.server_cpu_us,
                r.router_cpu_us
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_default(),
                r.client_cpu_us,
                r.drain_ms.map(|v| format!("{v:.0}")).unwrap_or_default()
            );
        }
        let errs: Vec<String> = self
            .cells
            .iter()
            .filter(|r| r.cell.workload == workload && r.cell.durability == durability)
            .filter_map(|r| r.first_error.as_ref().map(|e| format!("- {}: {e}", r.cell)))
            .collect();
        if !errs.is_empty() {
            let _ = writeln!(
                out,
                "\nFirst error of each failing cell:\n\n{}",
                errs.join("\n")
            );
        }
        out.push('\n');
    }

    pub fn markdown(&self) -> String {
        let p = &self.plan;
        let mut o = String::new();
        let _ = writeln!(o, "# dialogs: benchmark results\n");
        let _ = writeln!(
            o,
            "`{}` on {}, {}. Tarantool {}, {}. The load generator \
             (`bench/`, {} tokio worker threads) runs on the same machine. Each cell: \
             {:.1} s warm-up, then {:.1} s measured; the whole run took {:.0} s. Load \
             average {} (1, 5, 15 min) when the run started: other work on the \
             machine, which shares the same 2 cores ({} at the end, which also \
             counts this run's own 1000 PostgreSQL backends).\n",
            if !self.command.is_empty() {
                self.command.as_str()
            } else if p.smoke {
                "make bench-smoke"
            } else {
                "make bench"
            },
            self.date,
            self.machine,
            self.tarantool_version,
            self.pg_version.as_deref().unwrap_or("PostgreSQL not run"),
            p.client_threads,
            p.warmup,
            p.seconds,
            self.wall_seconds,
            self.loadavg_start,
            self.loadavg_end
        );
        let _ = writeln!(
            o,
            "![throughput and p99 against connections]({}.svg)\n\n\
             Server CPU per call is the CPU time of the server's processes (Tarantool: \
             all its threads; PostgreSQL: the postmaster and every backend) over the \
             measured window, divided by the requests completed in it. `conns`: C \
             connections with one request outstanding each; `pipelined`: one connection \
             with C requests in flight. `noop` is the same empty call in every workload, \
             measured once per C.\n",
            self.stem()
        );
        if let Some(note) = &self.sharded {
            let _ = writeln!(o, "`sharded`: {note}\n");
        }
        let _ = writeln!(o, "## The issue's targets\n");
        self.targets_table(&mut o);
        o.push('\n');
        self.inbox_section(&mut o);
        let _ = writeln!(
            o,
            "\n## Throughput and latency (wal_mode=write, synchronous_commit=off)\n"
        );
        for w in Workload::ALL {
            let what = match w {
                Workload::Write => {
                    "new_dialog between a random pair of 10,000 users, 100-character text"
                }
                Workload::Read => "a whole 20-message dialog, one of the preloaded ones at random",
                Workload::Page => "the newest 50 messages of a dialog of",
                Workload::Mixed => "90% `read`, 10% `write`",
                Workload::List => {
                    "`list_dialogs` of 20 entries, for a user (one of the preloaded ones at random) in 25 dialogs"
                }
                Workload::Mark => {
                    "`mark_read` up to the newest message of a dialog that a seeding step gave a new one"
                }
            };
            if w == Workload::Page {
                let _ = writeln!(o, "### `{w}`: {what} {} messages\n", p.page_dialog_len);
            } else {
                let _ = writeln!(o, "### `{w}`: {what}\n");
            }
            self.cell_table(&mut o, w, Durability::Write);
        }
        if self
            .cells
            .iter()
            .any(|r| r.cell.durability == Durability::Fsync)
        {
            let _ = writeln!(
                o,
                "## Durable: Tarantool wal_mode=fsync against PostgreSQL synchronous_commit=on\n"
            );
            for w in [Workload::Write, Workload::Mixed] {
                let _ = writeln!(o, "### `{w}`\n");
                self.cell_table(&mut o, w, Durability::Fsync);
            }
        }
        if let Some(m) = &self.micro {
            let _ = writeln!(
                o,
                "## In-process: ns per call through `box.func[...]:call`, no network\n\n\
                 {} calls of each write and a fifth as many pages, after a tenth as many \
                 to warm up, from the same garbage collector state; writes commit every \
                 100 calls; the fastest of 3 interleaved rounds. Wall time per call, and \
                 the tx thread's CPU time per call.\n\n\
                 | call | native wall | lua wall | native ÷ lua | native CPU | lua CPU |\n\
                 |---|---:|---:|---:|---:|---:|",
                p.micro_calls
            );
            for (name, n, l) in [
                ("new_dialog", &m.native_write, &m.lua_write),
                ("get_dialog, newest 50", &m.native_page, &m.lua_page),
            ] {
                let _ = writeln!(
                    o,
                    "| {name} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} |",
                    n.wall_ns,
                    l.wall_ns,
                    n.wall_ns / l.wall_ns.max(1e-9),
                    n.cpu_ns,
                    l.cpu_ns
                );
            }
            let _ = writeln!(
                o,
                "| empty Lua function (floor of a call) | {:.0} | | | {:.0} | |",
                m.noop.wall_ns, m.noop.cpu_ns
            );
            if let Some(f) = &m.page_floor {
                let _ = writeln!(
                    o,
                    "| the same 50 tuples by `index:select` in Lua, no function (floor of a page) | {:.0} | | | {:.0} | |",
                    f.wall_ns, f.cpu_ns
                );
                let above = AboveFloor::of(&m.native_page, &m.lua_page, f);
                let _ = writeln!(
                    o,
                    "\nAbove the page floor (what the procedure adds to receiving 50 tuples in \
                     Lua), fastest rounds: native {:.0} ns, lua {:.0} ns; {}.",
                    above.native_ns,
                    above.lua_ns,
                    above.spread()
                );
            }
            o.push('\n');
        }
        if let Some(t) = &self.tt_memory {
            let n = t.tuples.max(1.0);
            let _ = writeln!(
                o,
                "## Memory per message\n\n{:.0} messages of {TEXT_CHARS} characters \
                 ({TEXT_CHARS} bytes of text each), stored through `new_dialog`; bytes per message.\n\n\
                 | store | data | indexes | total | total ÷ text |\n|---|---:|---:|---:|---:|",
                t.tuples
            );
            let _ = writeln!(
                o,
                "| Tarantool memtx (`space:bsize()`, index `bsize()`) | {:.0} | {:.0} | {:.0} | {:.2} |",
                t.space_bsize / n,
                t.index_bsize / n,
                (t.space_bsize + t.index_bsize) / n,
                (t.space_bsize + t.index_bsize) / n / TEXT_CHARS as f64
            );
            let _ = writeln!(
                o,
                "| Tarantool memtx arena (`box.slab.info()`: items_used / arena_used growth) | {:.0} | {:.0} | {:.0} | {:.2} |",
                t.items_used / n,
                (t.arena_used - t.items_used) / n,
                t.arena_used / n,
                t.arena_used / n / TEXT_CHARS as f64
            );
            if let Some(m) = &self.pg_memory {
                let r = m.rows.max(1) as f64;
                let _ = writeln!(
                    o,
                    "| PostgreSQL (`pg_relation_size`, `pg_indexes_size`, `pg_total_relation_size`) | {:.0} | {:.0} | {:.0} | {:.2} |",
                    m.heap as f64 / r,
                    m.indexes as f64 / r,
                    m.total as f64 / r,
                    m.total as f64 / r / TEXT_CHARS as f64
                );
            }
            o.push('\n');
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::stem_of;

    #[test]
    fn result_files_are_named_by_release() {
        assert_eq!(stem_of("2.6.0-0-g47aa4e01e"), "tarantool-2.6.0");
        assert_eq!(stem_of("3.8.0-0-gdce7be8a79"), "tarantool-3.8.0");
        assert_eq!(stem_of("3.8.0"), "tarantool-3.8.0");
        assert_eq!(stem_of("../x"), "tarantool-..x");
        assert_eq!(stem_of(""), "tarantool-unknown");
    }
}
