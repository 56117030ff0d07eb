//! Developer workflows for lb. `cargo xtask <command>`.
//!
//! setup: install what a fresh machine lacks (apt packages, nightly rust-src, bpf-linker).
//! build-ebpf: build the XDP program with nightly for bpfel-unknown-none.
//! test: build the eBPF object and run the whole workspace test suite.
//! ci: setup, then test (what `.ci/run` calls).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install everything the build and tests need (idempotent).
    Setup,
    /// Build lb-ebpf for bpfel-unknown-none.
    BuildEbpf,
    /// Build the eBPF object and run all tests.
    Test,
    /// setup + test.
    Ci,
}

const APT_PACKAGES: &[&str] = &[
    "curl", "openssl", "nghttp2-client", "haproxy", "nginx", "wrk", "iproute2", "qemu-system-x86", "busybox-static",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup(),
        Cmd::BuildEbpf => build_ebpf(),
        Cmd::Test => test(),
        Cmd::Ci => {
            setup()?;
            test()
        }
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("failed to run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("failed to run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn setup() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !Command::new("dpkg").args(["-s", p]).output().map(|o| o.status.success()).unwrap_or(false))
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask setup: installing {missing:?}");
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    let have_linker = output(Command::new("bpf-linker").arg("--version")).map(|v| v.contains(BPF_LINKER_VERSION)).unwrap_or(false);
    if !have_linker {
        // bpf-linker linked against the nightly toolchain's own libLLVM (no system LLVM needed).
        let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
        let lib = PathBuf::from(&sysroot).join("lib");
        let llvm = std::fs::read_dir(&lib)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find(|n| n.starts_with("libLLVM-") && n.ends_with(".so"))
            .context("nightly toolchain ships no libLLVM-*.so")?;
        let llvm = llvm.trim_start_matches("lib").trim_end_matches(".so").to_string();
        let rustflags = format!("-L {0} -C link-arg=-Wl,-rpath,{0} -l dylib={llvm}", lib.display());
        run(Command::new("cargo")
            .args(["+nightly", "install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--no-default-features", "--features", "llvm-22,no-llvm-linking"])
            .env("RUSTFLAGS", rustflags))?;
    }
    Ok(())
}

fn build_ebpf() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    run(Command::new("cargo")
        .current_dir(root.join("lb-ebpf"))
        .args(["+nightly", "build", "--release", "--target", "bpfel-unknown-none", "-Z", "build-std=core", "--locked"])
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO"))
}

fn test() -> anyhow::Result<()> {
    build_ebpf()?;
    run(Command::new("cargo").args(["test", "--workspace", "--locked"]))
}
