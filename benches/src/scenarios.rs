//! The scenarios, the contenders, and the measurement loop: for each repetition, for each
//! scenario, for each contender (interleaved, never in blocks), run the load and record the
//! server's CPU seconds and memory and the generator's own CPU.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;

use crate::load::{self, Load};
use crate::procs;
use crate::select::Selection;
use crate::servers::{self, Server};

pub enum Kind {
    /// wrk over HTTP/1.1 keep-alive (or a new connection per request with `Connection: close`).
    Wrk { path: &'static str, threads: u32, conns: u32, close: bool },
    /// wrk POSTing a body of `size` bytes per request (upload).
    Upload { size: usize, threads: u32, conns: u32 },
    /// wrk with each connection paced so all together offer half the rate the slowest TLS
    /// contender reached in `small-1k-h1` (latency at half load).
    Paced { path: &'static str, threads: u32, conns: u32 },
    /// h2load over h2.
    H2 { path: &'static str, conns: u32, streams: u32 },
    /// openssl s_time handshakes, against the ECDSA P-256 or the RSA-2048 certificate.
    STime { resumed: bool, rsa: bool },
    /// Idle TLS connections held open; memory is what is measured.
    Idle { n: usize },
}

pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    pub kind: Kind,
}

impl Scenario {
    /// Whether a byte-forwarding contender can run it: the plain TCP proxy (no TLS) and lbd's
    /// raw mode (TLS terminated, bytes forwarded to the backend unparsed), which speak no h2 and
    /// hold a backend connection per client connection.
    pub fn forwarding_ok(&self) -> bool {
        matches!(self.kind, Kind::Wrk { close: false, .. } | Kind::Upload { .. })
    }
}

/// Facts about where the run happens.
pub struct Env {
    pub kernel: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub ktls: bool,
    /// Every single-core `openssl speed -evp aes-128-gcm` run at 16 KiB, bytes per second: three
    /// at the start, then (full runs) one after each round of scenarios.
    pub crypto_runs: Vec<f64>,
    pub nofile: u64,
}

impl Env {
    /// The crypto limit: the best run. A limit is what the core can do, and on a shared (virtual)
    /// machine other tenants only ever make a run slower; runs spread over the benchmark keep one
    /// slow moment at its start from lowering the limit every ratio is taken against.
    pub fn crypto_limit(&self) -> f64 {
        self.crypto_runs.iter().copied().fold(0.0, f64::max)
    }
}

pub struct Plan {
    pub quick: bool,
    pub reps: usize,
    pub seconds: u32,
    pub scenarios: Vec<Scenario>,
    pub env: Env,
    /// `--scenario`: also chooses among the L4, callgrind and guest scenarios (`main`).
    pub selection: Selection,
    /// The contenders the TLS scenarios run, in order (`--contender` limits them; profiling).
    pub contenders: Vec<&'static str>,
    /// The L4 scenarios' contenders, limited by `--contender` the same way.
    pub l4_contenders: Vec<&'static str>,
    /// Another lbd binary run as the contender `lbd-baseline` (userspace path), interleaved with
    /// the others: a before/after comparison of a change within one run.
    pub baseline: Option<std::path::PathBuf>,
}

/// Scenarios outside the TLS table: instructions per request under callgrind, and the guest's
/// two (run by xtask in the VM; lb-bench reads their results from a file).
const OTHER_SCENARIOS: [&str; 3] = ["request-insns", "guest-insns", "guest-idle"];

/// Repetitions of the half-load latency scenario in a full run: its p99 is compared against
/// HAProxy's, and repetitions here differ from one another by more than the contenders do, so
/// it gets more of them than the throughput scenarios' `reps`.
const LATENCY_REPS: usize = 7;

impl Plan {
    /// How many times `scenario` runs per contender.
    pub fn reps_of(&self, scenario: &Scenario) -> usize {
        match scenario.kind {
            Kind::Paced { .. } if !self.quick => self.reps.max(LATENCY_REPS),
            _ => self.reps,
        }
    }

    /// `only` and `contender` are `--scenario` and `--contender` (comma-separated names).
    pub fn new(quick: bool, only: Option<&str>, contender: Option<&str>, baseline: Option<std::path::PathBuf>, nofile: u64) -> anyhow::Result<Plan> {
        let idle = if quick { 500 } else { servers::idle_connections() as usize };
        let all = vec![
            Scenario { name: "bulk-1m-c1", what: "download 1 MiB bodies, 1 connection, HTTP/1.1 keep-alive", kind: Kind::Wrk { path: "/1m", threads: 1, conns: 1, close: false } },
            Scenario { name: "bulk-1m-c64", what: "download 1 MiB bodies, 64 connections", kind: Kind::Wrk { path: "/1m", threads: 2, conns: 64, close: false } },
            Scenario { name: "bulk-64m-c1", what: "download 64 MiB bodies, 1 connection", kind: Kind::Wrk { path: "/64m", threads: 1, conns: 1, close: false } },
            Scenario { name: "bulk-upload-1m-c64", what: "upload 1 MiB bodies (POST), 64 connections", kind: Kind::Upload { size: 1 << 20, threads: 2, conns: 64 } },
            small_h1(),
            Scenario { name: "small-1k-h1-half", what: "1 KiB responses, 64 keep-alive HTTP/1.1 connections paced to half the slowest TLS contender's small-1k-h1 rate (latency at half load)", kind: Kind::Paced { path: "/1k", threads: 2, conns: 64 } },
            Scenario { name: "small-1k-h2", what: "1 KiB responses, h2, 16 connections x 10 streams", kind: Kind::H2 { path: "/1k", conns: 16, streams: 10 } },
            Scenario { name: "handshake-full", what: "new TLS 1.3 connection per request (ECDSA P-256, full handshake), openssl s_time -new", kind: Kind::STime { resumed: false, rsa: false } },
            Scenario { name: "handshake-resumed", what: "resumed TLS 1.3 sessions (ECDSA P-256), openssl s_time -reuse", kind: Kind::STime { resumed: true, rsa: false } },
            Scenario { name: "handshake-rsa-full", what: "new TLS 1.3 connection per request (RSA-2048, full handshake), openssl s_time -new", kind: Kind::STime { resumed: false, rsa: true } },
            Scenario { name: "handshake-rsa-resumed", what: "resumed TLS 1.3 sessions (RSA-2048), openssl s_time -reuse", kind: Kind::STime { resumed: true, rsa: true } },
            Scenario { name: "idle-conns", what: "idle TLS connections held open (memory; count in the table), each contender freshly started", kind: Kind::Idle { n: idle } },
        ];
        let quick_set = ["bulk-1m-c1", "bulk-upload-1m-c64", "small-1k-h1", "small-1k-h1-half", "handshake-rsa-full", "idle-conns"];
        let known: Vec<&str> = all.iter().map(|s| s.name).chain(crate::l4::SCENARIOS.iter().map(|(n, _)| *n)).chain(OTHER_SCENARIOS).collect();
        let selection = Selection::parse("--scenario", only, &known)?;
        let scenarios: Vec<Scenario> = all.into_iter().filter(|s| if selection.is_all() { !quick || quick_set.contains(&s.name) } else { selection.wants(s.name) }).collect();
        let ktls = Path::new("/proc/net/tls_stat").exists();
        let mut host = vec!["lbd"];
        if baseline.is_some() {
            host.push("lbd-baseline");
        }
        host.push("lbd-raw");
        if ktls {
            host.extend(["lbd-ktls", "lbd-ktls-raw"]);
        }
        host.extend(["haproxy", "nginx", "tcp-proxy"]);
        let known: Vec<&str> = host.iter().copied().chain(crate::l4::CONTENDERS).collect();
        let chosen = Selection::parse("--contender", contender, &known)?;
        host.retain(|n| chosen.wants(n));
        let l4_contenders = crate::l4::CONTENDERS.into_iter().filter(|n| chosen.wants(n)).collect();
        let env = Env {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model: std::fs::read_to_string("/proc/cpuinfo")
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
                .unwrap_or_default(),
            ktls,
            crypto_runs: (0..3).map(|_| crypto_speed(crypto_seconds(quick))).collect::<anyhow::Result<_>>()?,
            nofile,
        };
        Ok(Plan { quick, reps: if quick { 1 } else { 3 }, seconds: if quick { 2 } else { 6 }, scenarios, env, selection, contenders: host, l4_contenders, baseline })
    }
}

fn crypto_seconds(quick: bool) -> u32 {
    if quick { 1 } else { 2 }
}

/// One `openssl speed` run on one core, bytes per second.
fn crypto_speed(seconds: u32) -> anyhow::Result<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-elapsed", "-seconds", &seconds.to_string(), "-bytes", "16384", "-evp", "aes-128-gcm"])
        .output()
        .context("failed to run openssl speed")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let k: f64 = text
        .lines()
        .rev()
        .find(|l| l.to_ascii_uppercase().starts_with("AES-128-GCM"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.trim_end_matches('k').parse().ok())
        .with_context(|| format!("openssl speed output: {text}"))?;
    Ok(k * 1000.0)
}

/// One measurement.
#[derive(Clone, Debug)]
pub struct Sample {
    pub scenario: &'static str,
    pub contender: &'static str,
    pub load: Load,
    pub server_cpu: f64,
    pub generator_cpu: f64,
    pub rss_before: u64,
    pub rss_after: u64,
}

/// Remarks for the report, each under a name (a contender or a scenario).
pub type Notes = Vec<(String, String)>;

/// Starts everything, runs the plan, stops everything.
/// Also returns the `openssl speed` runs it took after each round (full runs), for
/// [`Env::crypto_runs`].
pub fn run(plan: &Plan, lbd: &Path) -> anyhow::Result<(Vec<Sample>, Notes, Vec<f64>)> {
    if plan.scenarios.is_empty() {
        return Ok((vec![], vec![], vec![]));
    }
    let dir = tempdir()?;
    let certs = servers::certs(&dir)?;
    let backend = servers::backend(&dir.join("backend"))?;
    let names = &plan.contenders;
    let start = |name: &str, dir: &Path| {
        let bin = if name == "lbd-baseline" { plan.baseline.as_deref().unwrap_or(lbd) } else { lbd };
        servers::start(name, bin, dir, &certs, backend.port)
    };
    let contenders: Vec<Server> = names.iter().map(|n| start(n, &dir.join("shared"))).collect::<anyhow::Result<_>>()?;
    let mut notes: Notes = contenders.iter().filter(|c| !c.note.is_empty()).map(|c| (c.name.to_string(), c.note.clone())).collect();

    let mut samples = Vec::new();
    let mut half_rate = None;
    let rounds = plan.scenarios.iter().map(|s| plan.reps_of(s)).max().unwrap_or(0);
    let mut crypto = Vec::new();
    for rep in 0..rounds {
        for scenario in plan.scenarios.iter().filter(|s| rep < plan.reps_of(s)) {
            for c in &contenders {
                let plain = c.name == "tcp-proxy";
                if servers::forwards_bytes(c.name) && !scenario.forwarding_ok() {
                    continue;
                }
                // Memory is measured on a process that has served nothing else, so that what the
                // other scenarios left in its allocator does not count (or hide) here.
                let fresh = match scenario.kind {
                    Kind::Idle { .. } => Some(start(c.name, &dir.join(format!("fresh-{rep}")))?),
                    _ => None,
                };
                let c = fresh.as_ref().unwrap_or(c);
                // Fixed at its first use, so every repetition offers the same load.
                let half = match (&scenario.kind, half_rate) {
                    (Kind::Paced { .. }, None) => {
                        let rate = match half_load(&samples) {
                            Some(r) => r,
                            None => calibrate(plan, &contenders, &dir)?,
                        };
                        notes.push((scenario.name.to_string(), format!("offered load: about {rate:.0} requests/s (half the slowest TLS contender's small-1k-h1 median)")));
                        half_rate = Some(rate);
                        half_rate
                    }
                    (Kind::Paced { .. }, Some(r)) => Some(r),
                    _ => None,
                };
                let sample = measure(plan, scenario, c, plain, &dir, half).with_context(|| format!("{} against {}", scenario.name, c.name))?;
                eprintln!(
                    "rep {} {:>18} {:>10}: {:>10.1} MB/s {:>9.0} req/s, server CPU {:.2}s, generator CPU {:.2}s{}",
                    rep + 1,
                    scenario.name,
                    c.name,
                    sample.load.bytes / sample.load.seconds.max(1e-9) / 1e6,
                    sample.load.requests / sample.load.seconds.max(1e-9),
                    sample.server_cpu,
                    sample.generator_cpu,
                    sample.load.latency_ms.map(|(p50, p99, _)| format!(", p50 {p50:.2} ms p99 {p99:.2} ms")).unwrap_or_default()
                );
                samples.push(sample);
            }
        }
        if !plan.quick {
            crypto.push(crypto_speed(crypto_seconds(false))?);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok((samples, notes, crypto))
}

/// `small-1k-h1`: the full-load run that half load is derived from.
fn small_h1() -> Scenario {
    Scenario { name: "small-1k-h1", what: "1 KiB responses, 64 keep-alive HTTP/1.1 connections", kind: Kind::Wrk { path: "/1k", threads: 2, conns: 64, close: false } }
}

/// Half the `small-1k-h1` rate of the slowest HTTP-proxying TLS contender so far (medians), if
/// measured.
fn half_load(samples: &[Sample]) -> Option<f64> {
    let mut rates: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for s in samples.iter().filter(|s| s.scenario == "small-1k-h1" && !servers::forwards_bytes(s.contender)) {
        rates.entry(s.contender).or_default().push(s.load.requests / s.load.seconds.max(1e-9));
    }
    rates
        .into_values()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .min_by(f64::total_cmp)
        .map(|r| r / 2.0)
}

/// `small-1k-h1` at full load against every TLS contender, when the plan did not include it.
fn calibrate(plan: &Plan, contenders: &[Server], dir: &Path) -> anyhow::Result<f64> {
    let small = small_h1();
    let samples = contenders
        .iter()
        .filter(|c| !servers::forwards_bytes(c.name))
        .map(|c| measure(plan, &small, c, false, dir, None))
        .collect::<anyhow::Result<Vec<_>>>()?;
    half_load(&samples).context("no TLS contender to calibrate half load against")
}

fn measure(plan: &Plan, scenario: &Scenario, c: &Server, plain: bool, dir: &Path, half: Option<f64>) -> anyhow::Result<Sample> {
    let scheme = if plain { "http" } else { "https" };
    let url = |path: &str| format!("{scheme}://127.0.0.1:{}{path}", c.port);
    let wrk = |path: &str, threads: u32, connections: u32, headers: &'static [&'static str], lua: String| load::Wrk { url: url(path), threads, connections, seconds: plan.seconds, headers, lua };
    let pids = c.pids();
    let rss_before = procs::rss_bytes(&pids);
    let (cpu0, gen0, t0) = (procs::cpu_seconds(&pids), procs::children_cpu_seconds(), Instant::now());
    let mut held = None;
    let load = match &scenario.kind {
        Kind::Wrk { path, threads, conns, close } => {
            let headers: &[&str] = if *close { &["Connection: close"] } else { &[] };
            wrk(path, *threads, *conns, headers, String::new()).run(dir)?
        }
        Kind::Upload { size, threads, conns } => {
            let load = wrk("/upload", *threads, *conns, &[], load::upload_lua(*size)).run(dir)?;
            Load { bytes: load.requests * *size as f64, ..load }
        }
        Kind::Paced { path, threads, conns } => {
            let rate = half.context("half-load rate")?;
            wrk(path, *threads, *conns, &[], load::paced_lua(rate, *conns)).run(dir)?
        }
        Kind::H2 { path, conns, streams } => load::h2load(&format!("https://127.0.0.1:{}{path}", c.port), *conns, *streams, plan.seconds)?,
        Kind::STime { resumed, rsa } => {
            let port = if *rsa { c.rsa_port.context("contender without an RSA listener")? } else { c.port };
            load::s_time(port, *resumed, plan.seconds)?
        }
        Kind::Idle { n } => {
            held = Some(load::idle_connections(c.port, *n)?);
            std::thread::sleep(std::time::Duration::from_millis(500));
            Load { requests: *n as f64, bytes: 0.0, seconds: t0.elapsed().as_secs_f64(), errors: 0.0, latency_ms: None }
        }
    };
    let server_cpu = procs::cpu_seconds(&c.pids()) - cpu0;
    let generator_cpu = procs::children_cpu_seconds() - gen0;
    let rss_after = procs::rss_bytes(&c.pids());
    drop(held);
    Ok(Sample { scenario: scenario.name, contender: c.name, load, server_cpu, generator_cpu, rss_before, rss_after })
}

pub fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("lb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
