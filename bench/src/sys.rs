//! What the generator asks of the OS besides sockets: the open-file limit and
//! a process's resident memory, both through `/proc` (no `unsafe`, no libc).

use std::process::Command;

/// File descriptors the generator needs besides its connections (epoll, stdio, slack).
const SPARE_FDS: u64 = 64;

/// The soft and hard `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
fn nofile() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line["Max open files".len()..].split_whitespace();
    let parse = |s: Option<&str>| match s? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    Some((parse(nums.next())?, parse(nums.next())?))
}

/// Makes room for `conns` connections: raises the soft open-file limit to the
/// hard one if needed (with `prlimit`, since std cannot call `setrlimit`).
/// Errors say how many connections fit and that `ulimit -n` is the fix.
pub fn ensure_fds(conns: u64) -> Result<(), String> {
    let need = conns + SPARE_FDS;
    let Some((soft, hard)) = nofile() else {
        return Ok(()); // not Linux-like; let connect fail loudly if it must
    };
    if soft >= need {
        return Ok(());
    }
    if hard > soft {
        let pid = std::process::id().to_string();
        let _ = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
            .status();
    }
    match nofile() {
        Some((soft, _)) if soft >= need => Ok(()),
        Some((soft, hard)) => Err(format!(
            "{conns} connections need ~{need} open files; the limit is {soft} (hard {hard}): raise it with `ulimit -n`"
        )),
        None => Ok(()),
    }
}

/// The resident set size of process `pid` in bytes (`VmRSS` in `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_limits_and_rss_are_readable() {
        let (soft, hard) = nofile().unwrap();
        assert!(soft <= hard);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
        assert!(ensure_fds(1).is_ok());
    }
}
