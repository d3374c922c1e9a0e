//! CPU time of processes, from /proc: the figure that compares implementations
//! fairly when the load generator shares the machine's cores with the server.

use std::fs;

/// Clock ticks per second of /proc/<pid>/stat times.
fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The fields of /proc/<pid>/stat after the command name, or None if the
/// process is gone.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn field(fields: &[String], n: usize) -> u64 {
    // After the name, field 3 of stat(5) (state) is index 0.
    fields.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// utime + stime of all threads of `pid`, plus (with `reaped`) what its exited
/// and waited-for children used, in seconds.
fn process_cpu(pid: u32, reaped: bool) -> f64 {
    let Some(f) = stat_fields(pid) else {
        return 0.0;
    };
    let mut ticks = field(&f, 14) + field(&f, 15);
    if reaped {
        ticks += field(&f, 16) + field(&f, 17);
    }
    ticks as f64 / ticks_per_sec()
}

/// Where a server's CPU time is read from.
#[derive(Clone, Debug)]
pub enum CpuSource {
    /// One process, all its threads (Tarantool: tx, iproto, WAL).
    Process(u32),
    /// A process and all its children (the PostgreSQL postmaster and its
    /// backends); children that exited count through the parent's cutime.
    Tree(u32),
    /// Several processes, all their threads (a sharded cluster: router and storages).
    Processes(Vec<u32>),
}

impl CpuSource {
    /// Total CPU seconds used so far.
    pub fn seconds(&self) -> f64 {
        match *self {
            CpuSource::Process(pid) => process_cpu(pid, false),
            CpuSource::Processes(ref pids) => pids.iter().map(|&p| process_cpu(p, false)).sum(),
            CpuSource::Tree(root) => {
                let mut total = process_cpu(root, true);
                for child in children(root) {
                    total += process_cpu(child, true);
                }
                total
            }
        }
    }
}

/// Direct children of `pid` (scans /proc: works without CONFIG_PROC_CHILDREN).
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| stat_fields(p).is_some_and(|f| field(&f, 4) == u64::from(pid)))
        .collect()
}

/// CPU seconds this process (the load generator) has used so far.
pub fn self_seconds() -> f64 {
    process_cpu(std::process::id(), false)
}
