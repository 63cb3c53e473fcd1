//! What the agent's process is and what it uses: the build it runs (`axoneme_build_info`) and
//! the process figures under the names of Prometheus' process collector (CPU time, resident
//! memory, open and allowed file descriptors, start time), read from `/proc/self` each time
//! they are rendered. It reads only; it counts nothing of the traffic and keeps no state.

use std::fmt::Write as _;
use std::io;

use crate::telemetry::metrics::family;

/// The agent's version (the crate's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from; empty when the build could not tell.
pub const COMMIT: &str = env!("AXONEME_GIT_COMMIT");
/// The compiler's version, e.g. `1.91.0`; empty when the build could not tell.
pub const RUSTC: &str = env!("AXONEME_RUSTC_VERSION");

/// The build's identity as the API shows it.
pub fn build_json() -> serde_json::Value {
    serde_json::json!({ "version": VERSION, "commit": COMMIT, "rustc": RUSTC })
}

/// The process's figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_memory_bytes: u64,
    /// File descriptors open now.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Why the process's figures could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcessStatsError {
    /// A file of `/proc` could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    /// A file of `/proc` did not hold what the kernel documents.
    #[error("{path}: {what} not found")]
    Format {
        path: &'static str,
        what: &'static str,
    },
}

fn read(path: &'static str) -> Result<String, ProcessStatsError> {
    std::fs::read_to_string(path).map_err(|source| ProcessStatsError::Read { path, source })
}

/// Reads this process's figures from `/proc` (proc(5)).
pub fn read_stats() -> Result<ProcessStats, ProcessStatsError> {
    const STAT: &str = "/proc/self/stat";
    let stat = read(STAT)?;
    // The fields after the command name, which is in parentheses and may hold spaces: the
    // first of them is field 3 (state), so field n is at index n - 3.
    let after_name =
        stat.rsplit_once(')')
            .map(|(_, rest)| rest)
            .ok_or(ProcessStatsError::Format {
                path: STAT,
                what: "the command name's closing parenthesis",
            })?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize, what: &'static str| -> Result<u64, ProcessStatsError> {
        fields
            .get(n - 3)
            .and_then(|value| value.parse().ok())
            .ok_or(ProcessStatsError::Format { path: STAT, what })
    };
    let utime = field(14, "utime")?;
    let stime = field(15, "stime")?;
    let start_ticks = field(22, "starttime")?;
    let rss_pages = field(24, "rss")?;
    let ticks_per_second = system_setting(libc::_SC_CLK_TCK).max(1) as f64;
    let page_size = u64::try_from(system_setting(libc::_SC_PAGESIZE)).unwrap_or(4096);

    const PROC_STAT: &str = "/proc/stat";
    let boot_time: u64 = read(PROC_STAT)?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
        .ok_or(ProcessStatsError::Format {
            path: PROC_STAT,
            what: "btime",
        })?;

    const FDS: &str = "/proc/self/fd";
    let open_fds = std::fs::read_dir(FDS)
        .map_err(|source| ProcessStatsError::Read { path: FDS, source })?
        .count() as u64;

    const LIMITS: &str = "/proc/self/limits";
    // `Max open files            1024                 524288               files`
    let max_fds = read(LIMITS)?
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| match soft {
            "unlimited" => Some(u64::MAX),
            number => number.parse().ok(),
        })
        .ok_or(ProcessStatsError::Format {
            path: LIMITS,
            what: "Max open files",
        })?;

    Ok(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks_per_second,
        resident_memory_bytes: rss_pages * page_size,
        open_fds,
        max_fds,
        start_time_seconds: boot_time as f64 + start_ticks as f64 / ticks_per_second,
    })
}

/// The system setting `name` (a `_SC_` constant), as sysconf(3) tells it; -1 if unknown.
#[allow(unsafe_code)] // sysconf, which has no safe wrapper in the standard library
fn system_setting(name: libc::c_int) -> libc::c_long {
    // SAFETY: sysconf takes a plain integer and only reads a setting of the system.
    unsafe { libc::sysconf(name) }
}

/// Appends `axoneme_build_info` and, when `/proc` can be read, the process families.
pub fn render(out: &mut String) {
    family(
        out,
        "axoneme_build_info",
        "gauge",
        "Always 1; the labels name the build: version, git commit (empty when unknown) and \
         rustc version.",
    );
    let _ = writeln!(
        out,
        "axoneme_build_info{{version=\"{VERSION}\",commit=\"{COMMIT}\",rustc=\"{RUSTC}\"}} 1"
    );
    let Ok(stats) = read_stats() else {
        return;
    };
    let samples: [(&str, &str, &str, String); 5] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            stats.cpu_seconds.to_string(),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            stats.resident_memory_bytes.to_string(),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            stats.open_fds.to_string(),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            stats.max_fds.to_string(),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            stats.start_time_seconds.to_string(),
        ),
    ];
    for (name, kind, help, value) in samples {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}
