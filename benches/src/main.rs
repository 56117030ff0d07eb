//! `lb-bench`: the comparative benchmark behind `cargo xtask bench`. It starts a backend and
//! every contender (lbd, HAProxy, nginx, a plain TCP proxy), runs each scenario against each
//! contender in turn (interleaved, repeated), measures the server's CPU time from /proc and the
//! load generator's own CPU, and writes `target/bench/REPORT.md` and `target/bench/*.svg`.
//!
//! Usage: `lb-bench --lbd PATH --out DIR [--quick] [--scenario NAME[,NAME…]] [--contender NAME[,NAME…]]
//! [--baseline PATH]` (`--contender` runs only those contenders, e.g. to profile one;
//! `--baseline` adds another lbd build as `lbd-baseline`, for a change's before and after).

mod charts;
mod insns;
mod l4;
mod load;
mod procs;
mod report;
mod scenarios;
mod select;
mod servers;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("failed to run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

const USAGE: &str = "usage: lb-bench --lbd PATH [--out DIR] [--quick] [--scenario NAME[,NAME…]] [--contender NAME[,NAME…]] [--baseline PATH] [--guest-insns FILE] [--guest-idle FILE]";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut lbd, mut out, mut quick, mut only, mut guest, mut guest_idle, mut contender) = (None, PathBuf::from("target/bench"), false, None, None, None, None);
    let mut baseline = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--lbd" => lbd = args.next().map(PathBuf::from),
            "--out" => out = args.next().map(PathBuf::from).context("--out DIR")?,
            "--quick" => quick = true,
            "--scenario" => only = args.next(),
            "--contender" => contender = args.next(),
            "--baseline" => baseline = args.next().map(PathBuf::from),
            "--guest-insns" => guest = args.next().map(PathBuf::from),
            "--guest-idle" => guest_idle = args.next().map(PathBuf::from),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} ({USAGE})"),
        }
    }
    let lbd = lbd.context("--lbd PATH (the release lbd binary)")?;
    std::fs::create_dir_all(&out)?;
    let nofile = procs::raise_nofile();
    let mut plan = scenarios::Plan::new(quick, only.as_deref(), contender.as_deref(), baseline, nofile)?;
    let (samples, mut notes, crypto_runs) = scenarios::run(&plan, &lbd)?;
    plan.env.crypto_runs.extend(crypto_runs);
    // The L4 scenarios build network namespaces and attach XDP: root only.
    let l4 = if unsafe { libc::geteuid() } == 0 {
        let dir = scenarios::tempdir()?;
        // `--quick` checks the harness with one L4 scenario.
        let wanted = |name: &str| if plan.selection.is_all() { !quick || name == "l4-keepalive" } else { plan.selection.wants(name) };
        let l4 = l4::run(&lbd, &dir, plan.reps, plan.seconds, &wanted, &plan.l4_contenders)?;
        let _ = std::fs::remove_dir_all(&dir);
        l4
    } else {
        notes.push(("l4".into(), "the XDP L4 scenarios need root (network namespaces, XDP): not run".into()));
        vec![]
    };
    // Instructions per request under callgrind: the full run (and `--quick`, fewer requests, to
    // check the harness), or `--scenario request-insns`.
    let request_insns = if plan.selection.wants("request-insns") {
        let dir = scenarios::tempdir()?;
        let certs = servers::certs(&dir)?;
        let backend = servers::backend(&dir.join("backend"))?;
        let counted = insns::run(&lbd, plan.baseline.as_deref(), &dir, &out, &certs, backend.port, quick)?;
        drop(backend);
        let _ = std::fs::remove_dir_all(&dir);
        counted
    } else {
        vec![]
    };
    let guest = guest.map(|f| report::GuestInsns::read(&f)).transpose()?;
    let guest_idle = guest_idle.map(|f| report::GuestIdle::read(&f)).transpose()?;
    let results = report::Results { samples, l4, insns: request_insns, guest, guest_idle, notes };
    let text = report::write(&out, &plan, &results)?;
    println!("{text}");
    println!("report: {}", out.join("REPORT.md").display());
    Ok(())
}
