//! What the bench reads from and asks of the operating system: the open-file limit,
//! a process's resident memory and CPU time from /proc, this process's own CPU time,
//! and the loopback-only rule for targets.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Raise this process's RLIMIT_NOFILE soft limit to its hard limit; returns the limit
/// now in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// A process's resident set size in bytes (VmRSS in /proc/PID/status).
pub fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| anyhow::anyhow!("cannot read /proc/{pid}/status: {error}"))?;
    parse_vm_rss(&status).ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// A process's user plus system CPU time so far (utime + stime in /proc/PID/stat).
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|error| anyhow::anyhow!("cannot read /proc/{pid}/stat: {error}"))?;
    let ticks =
        parse_stat_ticks(&stat).ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat"))?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second() as f64,
    ))
}

fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// This process's own user plus system CPU time.
pub fn own_cpu() -> Duration {
    // SAFETY: getrusage fills a local struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Resolve `target` (HOST:PORT) and insist that it is on this machine's loopback.
pub async fn loopback_target(target: &str) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target)
        .await
        .map_err(|error| anyhow::anyhow!("cannot resolve {target:?}: {error}"))?
        .collect();
    let Some(first) = addrs.first().copied() else {
        anyhow::bail!("{target:?} resolves to no address");
    };
    if let Some(outside) = addrs.iter().find(|addr| !is_loopback(addr.ip())) {
        anyhow::bail!(
            "refusing to benchmark {target} ({}): switchboard bench only targets loopback \
             addresses (127.0.0.0/8 or ::1), never another machine",
            outside.ip()
        );
    }
    Ok(first)
}

/// Local addresses to spread connections over (127.0.0.1 ..= 127.0.0.COUNT), so a
/// server's per-IP connection limit and the ephemeral port range stretch further.
pub fn source_addresses(target: SocketAddr, count: u8) -> anyhow::Result<Vec<Option<IpAddr>>> {
    if count <= 1 {
        return Ok(vec![None]);
    }
    if !target.is_ipv4() {
        anyhow::bail!("--source-ips needs an IPv4 loopback target (127.x.y.z)");
    }
    Ok((1..=count)
        .map(|last| Some(IpAddr::from([127, 0, 0, last])))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss_and_cpu_ticks() {
        assert_eq!(
            parse_vm_rss("Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        let stat = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 1";
        assert_eq!(parse_stat_ticks(stat), Some(281));
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(resident_bytes(pid).unwrap() > 0);
        process_cpu(pid).unwrap();
        assert!(raise_open_file_limit().unwrap() > 0);
    }

    #[tokio::test]
    async fn only_loopback_targets_are_accepted() {
        assert!(loopback_target("127.0.0.1:9")
            .await
            .unwrap()
            .ip()
            .is_loopback());
        assert!(loopback_target("127.1.2.3:9").await.is_ok());
        assert!(loopback_target("[::1]:9").await.is_ok());
        assert!(loopback_target("localhost:9").await.is_ok());
        assert!(loopback_target("[::ffff:127.0.0.1]:9").await.is_ok());
        for outside in [
            "10.0.0.1:9",
            "192.168.1.1:9",
            "8.8.8.8:53",
            "[::ffff:8.8.8.8]:9",
            "0.0.0.0:9",
        ] {
            let error = loopback_target(outside).await.unwrap_err().to_string();
            assert!(
                error.contains("only targets loopback"),
                "{outside}: {error}"
            );
        }
    }
}
