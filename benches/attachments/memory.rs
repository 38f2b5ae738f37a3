//! Where a controller's memory is: /proc smaps, and glibc's own view
//! through gdb.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{memory_kib, mib};

/// Where a process's resident memory is, from /proc/<pid>/smaps: the
/// main heap (`[heap]`), anonymous mappings (glibc's other arenas, thread
/// stacks, large allocations), file-backed mappings (binary, libraries);
/// its thread count; and its largest anonymous mappings as size/resident.
pub fn smaps_summary(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut heap, mut anon, mut file) = (0u64, 0u64, 0u64);
    let mut anons: Vec<(u64, u64)> = Vec::new();
    // (kind, size) of the mapping whose fields are being read.
    let mut current: Option<(u8, u64)> = None;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            let path = line.split_whitespace().nth(5).unwrap_or("");
            let kind = match path {
                "[heap]" => 0,
                "" => 1,
                p if p.starts_with('[') => 3,
                _ => 2,
            };
            current = Some((kind, 0));
            continue;
        }
        let value: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match (first, current.as_mut()) {
            ("Size:", Some(c)) => c.1 = value,
            ("Rss:", Some(&mut (kind, size))) => match kind {
                0 => heap += value,
                1 => {
                    anon += value;
                    anons.push((size, value));
                }
                2 => file += value,
                _ => {}
            },
            _ => {}
        }
    }
    anons.sort_by_key(|a| std::cmp::Reverse(a.1));
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    let top: Vec<String> = anons
        .iter()
        .take(5)
        .map(|(size, rss)| format!("{}/{}", mib(*size), mib(*rss)))
        .collect();
    format!(
        "[heap] {}, anonymous {}, files {}; {threads} threads; largest anonymous mappings (size/resident): {}",
        mib(heap),
        mib(anon),
        mib(file),
        top.join(", ")
    )
}

/// Asks glibc in a running process, through gdb, for its statistics
/// (written to the process's stderr) and to give free memory back.
/// Returns the "in use" bytes and VmRSS (KiB) afterwards; None without gdb.
pub fn inspect_heap(pid: u32, log: &Path) -> Option<(u64, u64)> {
    let status = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "call (void)malloc_stats()",
        ])
        .args(["-ex", "call (int)malloc_trim(0)"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let text = std::fs::read_to_string(log).ok()?;
    let total = text.rsplit("Total (incl. mmap):").next()?;
    let in_use = total
        .lines()
        .find_map(|l| l.trim().strip_prefix("in use bytes"))?
        .trim_start_matches([' ', '='])
        .trim()
        .parse()
        .ok()?;
    Some((in_use, memory_kib(pid).0))
}
