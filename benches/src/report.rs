//! Turning samples into `REPORT.md` (tables, environment, exact commands, key ratios) and its SVG
//! charts (drawn by [`crate::charts`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::charts::{Bars, two_lines};
use crate::insns::RequestInsns;
use crate::l4::L4Sample;
use crate::scenarios::{Notes, Plan, Sample};

/// Median, min and max of a metric over repetitions.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    /// Each figure multiplied by `k`.
    pub fn scaled(self, k: f64) -> Stat {
        Stat { median: self.median * k, min: self.min * k, max: self.max * k }
    }
}

/// The host contenders, in the order the charts show them.
const CONTENDERS: [&str; 8] = ["lbd", "lbd-raw", "lbd-ktls", "lbd-ktls-raw", "lbd-baseline", "haproxy", "nginx", "tcp-proxy"];

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return Stat::default();
    }
    Stat { median: v[v.len() / 2], min: v[0], max: v[v.len() - 1] }
}

/// Per (scenario, contender): throughput, work per server CPU-second, and the rest.
struct Row {
    throughput: Stat,
    per_cpu: Stat,
    cores: f64,
    generator: f64,
    /// p50, p99, p99.9 over the repetitions, where every repetition reported them.
    latency: Option<[Stat; 3]>,
    rss: f64,
    rss_per_conn: f64,
    count: f64,
    errors: f64,
}

fn is_bulk(scenario: &str) -> bool {
    scenario.starts_with("bulk")
}

fn rows(samples: &[Sample]) -> BTreeMap<(&'static str, &'static str), Row> {
    let mut groups: BTreeMap<(&str, &str), Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        groups.entry((s.scenario, s.contender)).or_default().push(s);
    }
    groups
        .into_iter()
        .map(|(key, ss)| {
            let amount = |s: &Sample| if is_bulk(s.scenario) { s.load.bytes } else { s.load.requests };
            let median = |f: &dyn Fn(&Sample) -> f64| stat(ss.iter().map(|s| f(s)).collect()).median;
            let row = Row {
                throughput: stat(ss.iter().map(|s| amount(s) / s.load.seconds.max(1e-9)).collect()),
                per_cpu: stat(ss.iter().map(|s| amount(s) / s.server_cpu.max(1e-9)).collect()),
                cores: median(&|s| s.server_cpu / s.load.seconds.max(1e-9)),
                generator: median(&|s| s.generator_cpu / s.load.seconds.max(1e-9)),
                latency: ss.iter().all(|s| s.load.latency_ms.is_some()).then(|| {
                    let pct = |f: fn((f64, f64, f64)) -> f64| stat(ss.iter().filter_map(|s| s.load.latency_ms.map(f)).collect());
                    [pct(|l| l.0), pct(|l| l.1), pct(|l| l.2)]
                }),
                rss: median(&|s| s.rss_after as f64),
                rss_per_conn: median(&|s| (s.rss_after as f64 - s.rss_before as f64) / s.load.requests.max(1.0)),
                count: median(&|s| s.load.requests),
                errors: ss.iter().map(|s| s.load.errors).sum(),
            };
            (key, row)
        })
        .collect()
}

fn human(v: f64, bulk: bool) -> String {
    if bulk { format!("{:.1} MB", v / 1e6) } else { format!("{v:.0}") }
}

/// Everything one run measured, and what it has to say about it.
pub struct Results {
    pub samples: Vec<Sample>,
    pub l4: Vec<L4Sample>,
    pub insns: Vec<RequestInsns>,
    pub guest: Option<GuestInsns>,
    pub guest_idle: Option<GuestIdle>,
    pub notes: Notes,
}

/// Writes the report and chart; returns the printed summary.
pub fn write(out: &Path, plan: &Plan, results: &Results) -> anyhow::Result<String> {
    let Results { samples, l4, insns, notes, .. } = results;
    let (guest, guest_idle) = (results.guest.as_ref(), results.guest_idle.as_ref());
    let rows = rows(samples);
    let env = &plan.env;
    let mut md = String::new();
    writeln!(md, "# lb benchmark report\n")?;
    writeln!(md, "Mode: **{}**. Kernel {}, {} CPUs ({}), open-file limit {}.", if env.ktls { "native host with kTLS" } else { "native host without kTLS (lbd's userspace TLS path; the kTLS contenders cannot run here)" }, env.kernel, env.cpus, env.cpu_model, env.nofile)?;
    let latency_reps = plan.scenarios.iter().filter(|s| plan.reps_of(s) != plan.reps).map(|s| format!(" ({} × in `{}`)", plan.reps_of(s), s.name)).collect::<String>();
    writeln!(md, "Repetitions: {} × {} s per scenario and contender{latency_reps}, interleaved. {}\n", plan.reps, plan.seconds, if plan.quick { "`--quick`: a smoke run, the numbers are not meant to be read." } else { "" })?;
    let runs = &env.crypto_runs;
    let spread = if runs.len() > 3 { ": three at the start, then one after each round of scenarios" } else { "" };
    let slowest = runs.iter().copied().fold(f64::INFINITY, f64::min);
    writeln!(md, "Crypto limit: `openssl speed -elapsed -bytes 16384 -evp aes-128-gcm` = **{:.0} MB/s** on one core (best of {} runs{spread}; slowest {:.0} MB/s).\n", env.crypto_limit() / 1e6, runs.len(), slowest / 1e6)?;
    writeln!(md, "All contenders: TLS 1.3, TLS_AES_128_GCM_SHA256, ECDSA P-256 certificate (RSA-2048 in the `handshake-rsa-*` scenarios), loopback, same nginx backend (plain HTTP/1.1 keep-alive, static files). lbd proxies HTTP with `--ktls off` (\"lbd\") and, where the kernel has kTLS, `--ktls auto` (\"lbd-ktls\"); \"lbd-raw\" and \"lbd-ktls-raw\" are the same in raw mode (a TCP pool: the decrypted bytes forwarded unparsed, with splice(2) once kTLS holds the keys; ALPN http/1.1 only, so they run the byte-forwarding scenarios `tcp-proxy` runs); HAProxy `mode http` with `nbthread 2`; nginx `worker_processes 2` proxying with keep-alive upstreams; `tcp-proxy` is HAProxy `mode tcp` without TLS (the ceiling). Everything shares the machine's {} CPUs with the load generator and the backend, so figures are per server CPU-second, and the generator's own CPU is shown (≥ 0.9 of its threads means the generator, not the server, was the limit).\n", env.cpus)?;
    for (name, note) in notes {
        writeln!(md, "- {name}: {note}")?;
    }
    writeln!(md)?;
    for scenario in &plan.scenarios {
        let bulk = is_bulk(scenario.name);
        writeln!(md, "## {} — {}\n", scenario.name, scenario.what)?;
        if scenario.name == "idle-conns" {
            writeln!(md, "| contender | connections | RSS with the connections open | RSS per connection |\n|---|---|---|---|")?;
        } else {
            let unit = if bulk { "bytes/s" } else { "req/s" };
            writeln!(md, "| contender | {unit} median (min–max) | server cores busy | {} per server CPU-second (min–max) | p50 / p99 / p99.9 ms | generator CPU (cores) | errors |\n|---|---|---|---|---|---|---|", if bulk { "bytes" } else { "requests" })?;
        }
        for ((s, c), r) in rows.iter().filter(|((s, _), _)| *s == scenario.name) {
            let _ = s;
            if scenario.name == "idle-conns" {
                writeln!(md, "| {c} | {:.0} | {:.1} MiB | {:.1} KiB |", r.count, r.rss / 1048576.0, r.rss_per_conn / 1024.0)?;
                continue;
            }
            let lat = r.latency.map(|[a, b, c]| format!("{:.2} / {:.2} / {:.2}", a.median, b.median, c.median)).unwrap_or_else(|| "—".into());
            writeln!(
                md,
                "| {c} | {} ({}–{}) | {:.2} | {} ({}–{}) | {lat} | {:.2} | {:.0} |",
                human(r.throughput.median, bulk),
                human(r.throughput.min, bulk),
                human(r.throughput.max, bulk),
                r.cores,
                human(r.per_cpu.median, bulk),
                human(r.per_cpu.min, bulk),
                human(r.per_cpu.max, bulk),
                r.generator,
                r.errors
            )?;
        }
        writeln!(md)?;
    }

    let ratio = |scenario: &str, a: &str, b: &str| -> Option<f64> {
        Some(row(&rows, scenario, a)?.per_cpu.median / row(&rows, scenario, b)?.per_cpu.median)
    };
    let mut summary = String::from("Key ratios (per server CPU-second, medians):\n");
    let download = ["bulk-1m-c64", "bulk-1m-c1", "bulk-64m-c1"].into_iter().find(|s| rows.keys().any(|(n, _)| n == s));
    for b in download.into_iter().chain(Some("bulk-upload-1m-c64")) {
        for other in ["haproxy", "nginx"] {
            if let Some(r) = ratio(b, "lbd", other) {
                writeln!(summary, "- {b}: lbd / {other} = {r:.2}")?;
            }
        }
        for c in ["lbd", "lbd-raw"] {
            if let Some(r) = row(&rows, b, c) {
                writeln!(summary, "- {b}: {c} bytes per CPU-second / single-core crypto limit = {:.2}", r.per_cpu.median / env.crypto_limit())?;
            }
        }
    }
    if !env.ktls {
        writeln!(summary, "- kTLS / userspace: not measurable on this kernel (no kTLS)")?;
    }
    if let Some(b) = download {
        for (ktls, user, mode) in [("lbd-ktls", "lbd", "HTTP"), ("lbd-ktls-raw", "lbd-raw", "raw")] {
            if let Some(r) = ratio(b, ktls, user) {
                writeln!(summary, "- {b}: kTLS / userspace = {r:.2} ({mode} mode)")?;
            }
        }
    }
    for s in ["handshake-full", "handshake-resumed", "handshake-rsa-full", "handshake-rsa-resumed", "small-1k-h1", "small-1k-h2"] {
        for other in ["haproxy", "nginx"] {
            if let Some(r) = ratio(s, "lbd", other) {
                writeln!(summary, "- {s}: lbd / {other} = {r:.2}")?;
            }
        }
    }
    if let (Some(l), Some(h)) = (rows.get(&("small-1k-h1", "lbd")), rows.get(&("small-1k-h1", "haproxy")))
        && let (Some(a), Some(b)) = (l.latency, h.latency)
    {
        writeln!(summary, "- small-1k-h1 p99 at full load: lbd {:.2} ms, haproxy {:.2} ms", a[1].median, b[1].median)?;
    }
    let p99 = |c: &str| rows.get(&("small-1k-h1-half", c)).and_then(|r| r.latency).map(|[_, p, _]| format!("{c} {:.2} ms ({:.2}–{:.2})", p.median, p.min, p.max));
    if let (Some(l), Some(h), Some(rate)) = (p99("lbd"), p99("haproxy"), row(&rows, "small-1k-h1-half", "lbd")) {
        writeln!(summary, "- small-1k-h1-half p99 at half load (~{:.0} req/s), median (min–max) of the repetitions: {l}, {h}{}", rate.throughput.median, p99("nginx").map(|n| format!(", {n}")).unwrap_or_default())?;
    }
    // A before/after run (`--baseline`): this build against the other, scenario by scenario.
    for s in plan.scenarios.iter().map(|s| s.name) {
        if let Some(r) = ratio(s, "lbd", "lbd-baseline") {
            writeln!(summary, "- {s}: lbd / lbd-baseline = {r:.2}")?;
        }
    }
    if let (Some(l), Some(b)) = (p99("lbd"), p99("lbd-baseline")) {
        writeln!(summary, "- small-1k-h1-half p99 at half load: {l}, {b}")?;
    }
    if let Some(r) = rows.get(&("idle-conns", "lbd")) {
        writeln!(summary, "- idle-conns: lbd RSS {:.1} MiB with {:.0} connections, {:.1} KiB per connection", r.rss / 1048576.0, r.count, r.rss_per_conn / 1024.0)?;
    }
    l4_section(out, &mut md, &mut summary, l4)?;
    insns_section(&mut md, &mut summary, insns)?;
    if let Some(g) = guest {
        g.section(out, &mut md, &mut summary)?;
    }
    if let Some(g) = guest_idle {
        g.section(&mut md, &mut summary)?;
    }
    writeln!(md, "## Key ratios\n\n{}\n", summary.lines().skip(1).collect::<Vec<_>>().join("\n"))?;
    for (file, bars) in host_charts(plan, &rows) {
        if bars.draw(&out.join(file))? {
            writeln!(md, "![{}]({file})\n", bars.caption)?;
        }
    }
    writeln!(md, "## Reproduce\n\n```sh\ncargo xtask bench{}\n```\n", if plan.quick { " --quick" } else { "" })?;
    writeln!(md, "Generators: `wrk -t T -c C -d {s}s` (latency percentiles from its Lua `done` hook; uploads set `wrk.body`; the half-load run pauses each connection between requests from a Lua `delay()` averaging 64 / rate), `h2load -c 16 -m 10 -D {s}`, `openssl s_time -new|-reuse -time {s} -www /1k`, and a rustls client holding idle connections. Server CPU: utime+stime of every process of the contender from /proc/PID/stat, before and after.", s = plan.seconds)?;
    std::fs::write(out.join("REPORT.md"), &md)?;
    Ok(summary)
}

fn row<'a>(rows: &'a BTreeMap<(&'static str, &'static str), Row>, scenario: &str, contender: &str) -> Option<&'a Row> {
    rows.iter().find(|((s, c), _)| *s == scenario && *c == contender).map(|(_, r)| r)
}

/// The host charts, each with its file name: work per server CPU-second relative to HAProxy,
/// bulk bytes per server CPU-second against the crypto limit, small-request latency.
fn host_charts(plan: &Plan, rows: &BTreeMap<(&'static str, &'static str), Row>) -> Vec<(&'static str, Bars)> {
    let series = |scenarios: &[&str], f: &dyn Fn(&str, &str) -> Option<Stat>| -> Vec<(String, Vec<Option<Stat>>)> {
        CONTENDERS.iter().map(|c| (c.to_string(), scenarios.iter().map(|s| f(s, c)).collect())).collect()
    };
    // Paced load is not about work per CPU-second.
    let scenarios: Vec<&str> = plan.scenarios.iter().map(|s| s.name).filter(|n| !["idle-conns", "small-1k-h1-half"].contains(n)).collect();
    let relative = |s: &str, c: &str| Some(row(rows, s, c)?.per_cpu.scaled(1.0 / row(rows, s, "haproxy")?.per_cpu.median));
    let efficiency = Bars {
        caption: "Work per server CPU-second, relative to HAProxy (higher is better)".into(),
        y_desc: "× HAProxy (bytes, requests or handshakes per CPU-second)".into(),
        groups: scenarios.iter().map(|s| two_lines(s)).collect(),
        series: series(&scenarios, &relative),
        lines: vec![("HAProxy".into(), 1.0)],
    };
    let bulk: Vec<&str> = scenarios.iter().copied().filter(|s| is_bulk(s)).collect();
    let limit = plan.env.crypto_limit() / 1e6;
    let bulk = Bars {
        caption: "Bulk: bytes per server CPU-second against the single-core crypto limit".into(),
        y_desc: "MB per server CPU-second".into(),
        groups: bulk.iter().map(|s| two_lines(s)).collect(),
        series: series(&bulk, &|s, c| Some(row(rows, s, c)?.per_cpu.scaled(1e-6))),
        lines: vec![(format!("crypto limit, one core: {limit:.0} MB/s"), limit), ("half of it: the target".into(), limit / 2.0)],
    };
    let paced: Vec<&str> = ["small-1k-h1", "small-1k-h1-half"].into_iter().filter(|s| plan.scenarios.iter().any(|p| p.name == *s)).collect();
    let percentiles: Vec<(&str, usize, &str)> = paced.iter().flat_map(|s| [(*s, 0, "p50"), (*s, 1, "p99")]).collect();
    let latency = Bars {
        caption: "Small requests: wrk latency at full and at half load (lower is better)".into(),
        y_desc: "ms".into(),
        groups: percentiles.iter().map(|(s, _, p)| format!("{s}\n{p}")).collect(),
        series: CONTENDERS.iter().map(|c| (c.to_string(), percentiles.iter().map(|(s, i, _)| row(rows, s, c)?.latency.map(|l| l[*i])).collect())).collect(),
        lines: vec![],
    };
    vec![("efficiency.svg", efficiency), ("bulk.svg", bulk), ("latency.svg", latency)]
}

/// `request-insns`: lbd's instructions and allocations per request (callgrind).
fn insns_section(md: &mut String, summary: &mut String, insns: &[RequestInsns]) -> anyhow::Result<()> {
    if insns.is_empty() {
        return Ok(());
    }
    writeln!(md, "## request-insns — instructions lbd executes per proxied request (callgrind)\n")?;
    writeln!(md, "lbd (`--ktls off`) under `valgrind --tool=callgrind`, the nginx backend's 1 KiB file, `h2load -c 8` (`--h1`, or h2 with 10 streams per connection). After a warm-up (member pool, caches) the counters are zeroed; two counted runs follow, n then 2n requests, each on 8 new connections, each dumped (which zeroes again). Per request = (count(2n) − count(n)) / n: the requests alone, no handshake. Per connection = (count(n) − n × per request) / 8: a new client connection's TLS handshake, accept and setup. Userspace instructions of all lbd's threads; the kernel's socket work is not in them. Per-request figures repeat to within about 1 % run to run (timings here drift by 10 % and more); the per-connection figure, a remainder, to within about 15 %. The longer run's dumps are next to this report (`callgrind_annotate --inclusive=yes callgrind-lbd-h2.out`; 2n requests and 8 connections).\n")?;
    writeln!(md, "| contender | protocol | n | instructions per request | malloc calls per request | instructions per connection |\n|---|---|---|---|---|---|")?;
    for r in insns {
        writeln!(md, "| {} | {} | {} | {:.0} | {:.1} | {:.0} |", r.contender, r.proto, r.requests, r.insns_per_request, r.mallocs_per_request, r.insns_per_connection)?;
    }
    writeln!(md)?;
    for r in insns.iter().filter(|r| r.contender == "lbd") {
        write!(summary, "- request-insns {}: lbd {:.0} instructions, {:.1} mallocs per request, {:.0} instructions per connection", r.proto, r.insns_per_request, r.mallocs_per_request, r.insns_per_connection)?;
        if let Some(b) = insns.iter().find(|b| b.contender == "lbd-baseline" && b.proto == r.proto) {
            write!(summary, " (lbd-baseline {:.0}, {:.1}, {:.0}: {:.3}× per request)", b.insns_per_request, b.mallocs_per_request, b.insns_per_connection, r.insns_per_request / b.insns_per_request)?;
        }
        writeln!(summary)?;
    }
    Ok(())
}

/// The XDP L4 scenarios: a table per scenario and the XDP / userspace ratios.
fn l4_section(out: &Path, md: &mut String, summary: &mut String, l4: &[L4Sample]) -> anyhow::Result<()> {
    if l4.is_empty() {
        return Ok(());
    }
    let per = |f: &dyn Fn(&L4Sample) -> f64, scenario: &str, contender: &str| -> Stat {
        stat(l4.iter().filter(|s| s.scenario == scenario && s.contender == contender).map(f).collect())
    };
    let pkt_per_cpu = |s: &L4Sample| s.client_packets / s.lb_cpu;
    let req_per_cpu = |s: &L4Sample| s.load.requests / s.lb_cpu;
    for (scenario, what) in crate::l4::SCENARIOS {
        if !l4.iter().any(|s| s.scenario == scenario) {
            continue;
        }
        writeln!(md, "## {scenario} — {what}\n")?;
        writeln!(md, "Client namespace (wrk -t 2 -c 32) → lb node → member namespace (nginx), veth links, each contender alone while measured. lb CPU: the proxy's processes; for lbd-xdp, lbd's process plus the XDP program's run time from the kernel's BPF statistics (the driver's redirect/transmit work after the program is not in it; see `benches/src/l4.rs`). Machine CPU per 1k requests covers everything (generator and member too) and attributes nothing.\n")?;
        writeln!(md, "| contender | req/s median | client packets/s | lb cores busy (process + XDP) | packets per lb CPU-second (min–max) | requests per lb CPU-second | machine CPU-ms per 1k requests | generator cores | errors |\n|---|---|---|---|---|---|---|---|---|")?;
        for c in crate::l4::CONTENDERS {
            let rows: Vec<&L4Sample> = l4.iter().filter(|s| s.scenario == scenario && s.contender == c).collect();
            if rows.is_empty() {
                continue;
            }
            let secs = |s: &L4Sample| s.load.seconds.max(1e-9);
            let p = per(&pkt_per_cpu, scenario, c);
            writeln!(
                md,
                "| {c} | {:.0} | {:.0} | {:.3} | {:.0} ({:.0}–{:.0}) | {:.0} | {:.0} | {:.2} | {:.0} |",
                per(&|s| s.load.requests / secs(s), scenario, c).median,
                per(&|s| s.client_packets / secs(s), scenario, c).median,
                per(&|s| s.lb_cpu / secs(s), scenario, c).median,
                p.median,
                p.min,
                p.max,
                per(&req_per_cpu, scenario, c).median,
                per(&|s| s.machine_cpu * 1e6 / s.load.requests.max(1.0), scenario, c).median,
                per(&|s| s.generator_cpu / secs(s), scenario, c).median,
                per(&|s| s.load.errors, scenario, c).median,
            )?;
        }
        writeln!(md)?;
        for other in ["haproxy-tcp", "lbd-userspace"] {
            let (x, o) = (per(&pkt_per_cpu, scenario, "lbd-xdp").median, per(&pkt_per_cpu, scenario, other).median);
            if x > 0.0 && o > 0.0 {
                writeln!(summary, "- {scenario}: packets per lb CPU-second, lbd-xdp / {other} = {:.2}", x / o)?;
            }
            let machine = |c: &str| per(&|s: &L4Sample| s.machine_cpu / s.load.requests.max(1.0), scenario, c).median;
            if machine("lbd-xdp") > 0.0 && machine(other) > 0.0 {
                writeln!(summary, "- {scenario}: machine CPU per request, {other} / lbd-xdp = {:.2}", machine(other) / machine("lbd-xdp"))?;
            }
        }
    }
    let scenarios: Vec<&str> = crate::l4::SCENARIOS.iter().map(|(n, _)| *n).filter(|n| l4.iter().any(|s| s.scenario == *n)).collect();
    let relative = |scenario: &str, c: &str| {
        let tcp = per(&pkt_per_cpu, scenario, "haproxy-tcp").median;
        let p = per(&pkt_per_cpu, scenario, c);
        (tcp > 0.0 && p.max > 0.0).then(|| p.scaled(1.0 / tcp))
    };
    let chart = Bars {
        caption: "L4: packets per load-balancer CPU-second, relative to HAProxy mode tcp (higher is better)".into(),
        y_desc: "× HAProxy mode tcp".into(),
        groups: scenarios.iter().map(|s| two_lines(s)).collect(),
        series: crate::l4::CONTENDERS.iter().map(|c| (c.to_string(), scenarios.iter().map(|s| relative(s, c)).collect())).collect(),
        lines: vec![("HAProxy mode tcp".into(), 1.0), ("target: 5×".into(), 5.0)],
    };
    if chart.draw(&out.join("l4.svg"))? {
        writeln!(md, "![{}](l4.svg)\n", chart.caption)?;
    }
    Ok(())
}

/// Guest instruction counts per (mode, transfer size), from `cargo xtask bench`'s guest runs.
pub struct GuestInsns {
    /// mode → the small and the large transfer.
    modes: BTreeMap<String, Vec<GuestRun>>,
}

/// One boot's counts, over the transfer's window (`lb-guest-transfer`'s marks).
struct GuestRun {
    bytes: f64,
    /// All vCPUs.
    whole: f64,
    /// vCPU 1, where lbd is pinned.
    lbd: f64,
}

/// Which count a figure uses.
#[derive(Clone, Copy)]
enum Count {
    Whole,
    Lbd,
}

impl GuestInsns {
    pub fn read(path: &Path) -> anyhow::Result<GuestInsns> {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        let mut modes = BTreeMap::new();
        for (mode, runs) in v.as_object().into_iter().flatten() {
            let runs = runs
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| GuestRun { bytes: r["bytes"].as_f64().unwrap_or(0.0), whole: r["instructions"].as_f64().unwrap_or(0.0), lbd: r["lbd_instructions"].as_f64().unwrap_or(0.0) })
                .collect();
            modes.insert(mode.clone(), runs);
        }
        Ok(GuestInsns { modes })
    }

    /// Instructions per byte moved: the difference between the two transfer sizes.
    fn per_byte(&self, mode: &str, count: Count) -> Option<f64> {
        let runs = self.modes.get(mode)?;
        let (small, large) = (runs.first()?, runs.last()?);
        let of = |r: &GuestRun| match count {
            Count::Whole => r.whole,
            Count::Lbd => r.lbd,
        };
        (large.bytes > small.bytes).then(|| (of(large) - of(small)) / (large.bytes - small.bytes))
    }

    fn section(&self, out: &Path, md: &mut String, summary: &mut String) -> anyhow::Result<()> {
        writeln!(md, "## guest-insns — kTLS versus userspace TLS, in guest instructions per byte\n")?;
        writeln!(md, "A QEMU guest on Debian's kernel (which has kTLS), under TCG with our instruction-counting plugin (`benches/tcg-insns`, vCPUs on one TCG thread so counts are exact). One boot per mode and size runs `lb-guest-transfer`: a backend sends N bytes over TCP, lbd terminates TLS 1.3 AES-128-GCM in raw mode (`ktls`: splice between the sockets; `userspace`: rustls and a copy loop) or in HTTP mode (`-http`: hyper proxies one GET whose response body is the N bytes, over kTLS or rustls), a rustls client reads them. The `-upload` modes move the N bytes the other way: the rustls client sends them (in HTTP mode as one POST's body), lbd decrypts them (kTLS: the kernel, into lbd's buffer or, in raw mode, spliced on to the member; userspace: rustls) and the backend reads them. lbd runs as with `--ktls-rx-expect-no-pad` (the client does not pad its records). lbd's threads are pinned to vCPU 1, the backend's and the client's to vCPU 0. The plugin counts per vCPU, user and kernel, between two marks the program executes around the connection and its transfer. *Whole guest* is every vCPU (the client's decryption and copies, the backend's sends, lbd); *lbd's vCPU* is vCPU 1 alone: lbd's own instructions and the kernel work its system calls run, including the loopback delivery of what it sends — the guest's counterpart of the server CPU time measured on the host. Instructions per byte = (count(large) − count(small)) / (large − small), which leaves only the bytes' cost. Emulated timings mean nothing; instruction counts do not depend on them.\n")?;
        writeln!(md, "| mode | small transfer | large transfer | whole guest: instructions (small / large) | whole guest per byte | lbd's vCPU: instructions (small / large) | lbd's vCPU per byte |\n|---|---|---|---|---|---|---|")?;
        for (mode, runs) in &self.modes {
            if let (Some(s), Some(l), Some(w), Some(b)) = (runs.first(), runs.last(), self.per_byte(mode, Count::Whole), self.per_byte(mode, Count::Lbd)) {
                writeln!(md, "| {mode} | {:.0} MiB | {:.0} MiB | {:.3e} / {:.3e} | {w:.2} | {:.3e} / {:.3e} | {b:.2} |", s.bytes / 1048576.0, l.bytes / 1048576.0, s.whole, l.whole, s.lbd, l.lbd)?;
            }
        }
        writeln!(md)?;
        for (count, what) in [(Count::Lbd, "lbd's vCPU"), (Count::Whole, "whole guest")] {
            for (suffix, kind) in [("", "raw"), ("-http", "HTTP"), ("-upload", "raw upload"), ("-http-upload", "HTTP upload")] {
                let per = |path: &str| self.per_byte(&format!("{path}{suffix}"), count);
                if let (Some(k), Some(u)) = (per("ktls"), per("userspace")) {
                    writeln!(summary, "- guest instructions per byte ({what}), kTLS {kind} / userspace {kind} = {:.2} ({k:.2} vs {u:.2})", k / u)?;
                }
            }
        }
        let kinds = [("", "raw\ndownload"), ("-http", "HTTP\ndownload"), ("-upload", "raw\nupload"), ("-http-upload", "HTTP\nupload")];
        let counts = [("ktls", Count::Lbd, "kTLS, lbd's vCPU"), ("userspace", Count::Lbd, "userspace TLS, lbd's vCPU"), ("ktls", Count::Whole, "kTLS, whole guest"), ("userspace", Count::Whole, "userspace TLS, whole guest")];
        let chart = Bars {
            caption: "Guest instructions per byte moved: kTLS against userspace TLS (lower is better)".into(),
            y_desc: "instructions per byte".into(),
            groups: kinds.iter().map(|(_, label)| label.to_string()).collect(),
            series: counts
                .iter()
                .map(|(path, count, name)| {
                    let per = kinds.iter().map(|(suffix, _)| self.per_byte(&format!("{path}{suffix}"), *count).map(|v| Stat { median: v, min: v, max: v }));
                    (name.to_string(), per.collect())
                })
                .collect(),
            lines: vec![],
        };
        if chart.draw(&out.join("guest-insns.svg"))? {
            writeln!(md, "![{}](guest-insns.svg)\n", chart.caption)?;
        }
        Ok(())
    }
}

/// Idle TLS connections held open to a real lbd in the guest, kTLS off and on, from `cargo xtask
/// bench`'s guest runs (`lb-guest-idle`).
pub struct GuestIdle {
    /// (lbd's `--ktls`, connections, RSS before, RSS after), RSS in KiB.
    runs: Vec<(String, f64, f64, f64)>,
}

impl GuestIdle {
    pub fn read(path: &Path) -> anyhow::Result<GuestIdle> {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        let runs = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
                (r["ktls"].as_str().unwrap_or("").to_string(), f("conns"), f("rss_before_kib"), f("rss_after_kib"))
            })
            .collect();
        Ok(GuestIdle { runs })
    }

    fn section(&self, md: &mut String, summary: &mut String) -> anyhow::Result<()> {
        writeln!(md, "## guest-idle — idle TLS connections on a kernel with kTLS\n")?;
        writeln!(md, "The same guest (Debian's kernel, kTLS), one boot per mode: `lb-guest-idle` starts a real lbd process (`--ktls auto` or `off`), configures a TERMINATED_HTTPS listener through its API, opens N TLS 1.3 connections that send nothing after the handshake and reads lbd's RSS (`/proc/PID/status`) before and after. It checks that every connection was counted on the path asked for (`lb_tls_connections_total`). Memory does not depend on emulation speed: these figures are real.\n")?;
        writeln!(md, "| lbd | connections | RSS before | RSS with the connections open | RSS per connection |\n|---|---|---|---|---|")?;
        for (ktls, n, before, after) in &self.runs {
            writeln!(md, "| --ktls {ktls} | {n:.0} | {:.1} MiB | {:.1} MiB | {:.2} KiB |", before / 1024.0, after / 1024.0, (after - before) / n)?;
        }
        writeln!(md)?;
        for (ktls, n, _, after) in &self.runs {
            let path = if ktls == "auto" { "kTLS" } else { "userspace TLS" };
            writeln!(summary, "- guest-idle: lbd ({path}, --ktls {ktls}) RSS {:.1} MiB with {n:.0} idle connections", after / 1024.0)?;
        }
        Ok(())
    }
}
