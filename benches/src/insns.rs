//! `request-insns`: instructions lbd executes per proxied HTTP request, counted by callgrind
//! (valgrind), and its heap allocations per request. Counts, unlike timings on this shared
//! 2-vCPU machine, repeat to within a fraction of a per cent, so a change of a few per cent in
//! lbd's own request path shows (with `--baseline`, before against after). Userspace only: the
//! kernel's share (the socket calls, the same for every proxy) is not counted.
//!
//! Two counted runs, n and 2n requests, each on 8 new connections: the difference is n requests
//! and nothing else, so the per-request figure holds no handshake; what the first run holds
//! beyond its n requests is the 8 connections' setup (TLS handshake, accept, member checkout).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::servers::{self, Certs};

/// One lbd build, one protocol.
pub struct RequestInsns {
    pub contender: &'static str,
    /// `h1` or `h2`.
    pub proto: &'static str,
    /// Requests in the shorter counted run (the longer one has twice as many).
    pub requests: u64,
    pub insns_per_request: f64,
    pub mallocs_per_request: f64,
    /// One new client connection's cost beyond its requests: handshake, accept, setup.
    pub insns_per_connection: f64,
}

/// Client connections of each counted run.
const CONNECTIONS: u64 = 8;

/// Requests counted per (build, protocol), and the warm-up before them (handshakes, the member
/// pool), not counted; `--quick` (a check of the harness) runs fewer, HTTP/1.1 only.
fn requests(quick: bool) -> (u64, u64) {
    if quick { (200, 50) } else { (3000, 400) }
}

/// Counts `lbd` (and `baseline` as `lbd-baseline`) for HTTP/1.1 and h2 clients: 1 KiB
/// responses from the nginx backend, `h2load -c 8` (h2: 10 streams per connection). The longer
/// run's callgrind dump (2n requests, 8 connections) is kept as
/// `report_dir/callgrind-NAME-PROTO.out` for `callgrind_annotate`.
pub fn run(lbd: &Path, baseline: Option<&Path>, dir: &Path, report_dir: &Path, certs: &Certs, backend: u16, quick: bool) -> anyhow::Result<Vec<RequestInsns>> {
    let mut builds = vec![("lbd", lbd)];
    builds.extend(baseline.map(|b| ("lbd-baseline", b)));
    let mut out = Vec::new();
    std::fs::create_dir_all(report_dir)?;
    // `--quick` checks the harness with HTTP/1.1 alone (each count starts lbd under valgrind).
    let protos: &[&'static str] = if quick { &["h1"] } else { &["h1", "h2"] };
    for &proto in protos {
        for &(name, bin) in &builds {
            let d = dir.join(format!("insns-{name}-{proto}"));
            std::fs::create_dir_all(&d)?;
            let counted = count(bin, name, proto, &d, certs, backend, requests(quick)).with_context(|| format!("request-insns {proto} against {name}"))?;
            std::fs::copy(d.join("callgrind.out.2"), report_dir.join(format!("callgrind-{name}-{proto}.out")))?;
            eprintln!("request-insns {proto:>2} {name:>12}: {:.0} instructions, {:.1} mallocs per request; {:.0} instructions per connection", counted.insns_per_request, counted.mallocs_per_request, counted.insns_per_connection);
            out.push(counted);
        }
    }
    Ok(out)
}

fn count(bin: &Path, name: &'static str, proto: &'static str, dir: &Path, certs: &Certs, backend: u16, (n, warm_up): (u64, u64)) -> anyhow::Result<RequestInsns> {
    let out_file = dir.join("callgrind.out");
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind").arg(format!("--callgrind-out-file={}", out_file.display())).arg("--dump-instr=no").arg(bin);
    let server = servers::lbd_run(cmd, dir, certs, backend, name)?;
    let url = format!("https://127.0.0.1:{}/1k", server.port);
    h2load(&url, proto, warm_up)?;
    let pid = server.pid().to_string();
    crate::run(Command::new("callgrind_control").args(["-z", &pid]))?;
    // Each dump also zeroes the counters; callgrind numbers its dumps from 1.
    let counted_run = |i: u32, requests: u64| -> anyhow::Result<(u64, u64)> {
        h2load(&url, proto, requests)?;
        crate::run(Command::new("callgrind_control").args(["-d", &pid]))?;
        let dump = dir.join(format!("callgrind.out.{i}"));
        let started = Instant::now();
        while !dump.exists() && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = std::fs::read_to_string(&dump).with_context(|| format!("reading {}", dump.display()))?;
        parse(&text).with_context(|| format!("parsing {}", dump.display()))
    };
    let (i1, m1) = counted_run(1, n)?;
    let (i2, m2) = counted_run(2, 2 * n)?;
    drop(server);
    if i2 <= i1 {
        bail!("{i1} instructions for {n} requests, {i2} for {}: the longer run must count more", 2 * n);
    }
    let insns_per_request = (i2 - i1) as f64 / n as f64;
    Ok(RequestInsns {
        contender: name,
        proto,
        requests: n,
        insns_per_request,
        mallocs_per_request: m2.saturating_sub(m1) as f64 / n as f64,
        insns_per_connection: (i1 as f64 - n as f64 * insns_per_request) / CONNECTIONS as f64,
    })
}

/// Runs `n` requests; fails unless every one succeeded.
fn h2load(url: &str, proto: &str, n: u64) -> anyhow::Result<()> {
    let count = n.to_string();
    let connections = CONNECTIONS.to_string();
    let mut args = vec!["-n", &count, "-c", &connections, "-t", "1"];
    args.extend(if proto == "h1" { &["--h1"][..] } else { &["-m", "10"][..] });
    args.push(url);
    let load = crate::load::h2load_run(&args, 0.0)?;
    if load.requests != n as f64 || load.errors != 0.0 {
        bail!("h2load {proto}: {} of {n} requests done, {} failed", load.requests, load.errors);
    }
    Ok(())
}

/// (instructions, calls to malloc) in a callgrind dump: its `summary:` line, and the `calls=`
/// lines whose callee is `malloc` (callgrind names a function once, `(id) name`, then by `(id)`).
fn parse(text: &str) -> anyhow::Result<(u64, u64)> {
    let instructions = text.lines().find_map(|l| l.strip_prefix("summary: ")).and_then(|v| v.trim().parse().ok()).context("no summary line in the callgrind dump")?;
    let mut malloc_id = None;
    let mut callee_is_malloc = false;
    let mut mallocs = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("calls=") {
            if callee_is_malloc {
                mallocs += rest.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
            continue;
        }
        let (callee, rest) = match (line.strip_prefix("cfn="), line.strip_prefix("fn=")) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            _ => continue,
        };
        let (id, name) = rest.split_once(' ').map_or((rest, None), |(i, n)| (i, Some(n)));
        if name == Some("malloc") {
            malloc_id = Some(id.to_string());
        }
        if callee {
            callee_is_malloc = malloc_id.as_deref() == Some(id);
        }
    }
    Ok((instructions, mallocs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dump_gives_its_summary_and_the_calls_to_malloc() {
        let dump = "events: Ir\nsummary: 1234\n\nfn=(1) main\n3 10\ncfn=(2) malloc\ncalls=5 0\n4 50\ncfn=(3) free\ncalls=7 0\n5 9\nfn=(4) other\ncfn=(2)\ncalls=2 0\n6 8\n";
        assert_eq!(super::parse(dump).unwrap(), (1234, 7));
    }
}
