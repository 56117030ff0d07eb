//! Developer workflows for lb. `cargo xtask <command>`.
//!
//! setup: install what a fresh machine lacks (apt packages, nightly rust-src, bpf-linker).
//! build-ebpf: build the XDP program with nightly for bpfel-unknown-none.
//! test: build the eBPF object and run the whole workspace test suite.
//! vm-test: run the kernel-dependent suites (kTLS, XDP) as root in a QEMU guest on Debian's kernel.
//! vm-run: run any command in that guest (debugging).
//! ci: setup, test, vm-test (what `.ci/run` calls).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

mod vm;

use vm::GuestKernel;

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
    /// Run the kTLS and XDP suites as root in a QEMU guest booted on Debian's kernel (the kTLS
    /// suite on Debian 12's and Debian 13's).
    VmTest {
        /// Guest time limit in seconds before the run counts as a harness failure.
        #[arg(long, default_value_t = 2400)]
        timeout: u64,
        /// Only the suites run on this kernel.
        #[arg(long, value_enum)]
        kernel: Option<GuestKernel>,
        /// Arguments passed to each test binary (a name filter, --exact, ...).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run one command as root in the guest (cwd = workspace root).
    VmRun {
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// The kernel the guest boots.
        #[arg(long, value_enum, default_value = "stable")]
        kernel: GuestKernel,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Comparative benchmark (lbd vs HAProxy vs nginx vs a plain TCP proxy) on this host:
    /// target/bench/REPORT.md and efficiency.svg.
    Bench {
        /// A smoke run (< 3 minutes, debug build): checks the harness, not the numbers.
        #[arg(long)]
        quick: bool,
        /// Run only these scenarios, comma-separated (bulk-1m-c1, bulk-1m-c64, bulk-64m-c1,
        /// bulk-upload-1m-c64, small-1k-h1, small-1k-h1-half, small-1k-h2, handshake-full,
        /// handshake-resumed, handshake-rsa-full, handshake-rsa-resumed, idle-conns,
        /// l4-keepalive, l4-connections, request-insns, guest-insns, guest-idle); an unknown
        /// name is an error.
        #[arg(long)]
        scenario: Option<String>,
    },
    /// setup + test + vm-test.
    Ci,
}

/// A test binary run in a guest.
struct VmSuite {
    package: &'static str,
    target: &'static str,
    /// Extra test-harness arguments.
    extra: &'static [&'static str],
    kernel: GuestKernel,
    /// The tests it runs when `vm-test` is given no filter (`None`: all of them).
    filter: Option<&'static str>,
    /// Environment for the run (requirements the tests check).
    env: &'static [(&'static str, &'static str)],
}

/// Test binaries run in the guest. On the host their kTLS-dependent tests are `#[ignore]`d with
/// the reason; the guest runs them with `--include-ignored`. The XDP suite runs one test at a
/// time there: each test builds its own namespace topology and drives hundreds of connections,
/// which two emulated vCPUs serve slowly. The kTLS suite runs a second time on Debian 13's
/// kernel (kTLS and splice changed inside the kernel since 6.1), and its key-update tests a third
/// time on a kernel that takes new keys (the others check that the rest end such connections).
const VM_SUITES: &[VmSuite] = &[
    VmSuite { package: "lb-tests", target: "ktls", extra: &[], kernel: GuestKernel::Stable, filter: None, env: &[] },
    VmSuite { package: "lb-tests", target: "xdp", extra: &["--test-threads=1"], kernel: GuestKernel::Stable, filter: None, env: &[] },
    VmSuite { package: "lb-tests", target: "ktls", extra: &[], kernel: GuestKernel::Trixie, filter: None, env: &[] },
    VmSuite {
        package: "lb-tests",
        target: "ktls",
        extra: &[],
        kernel: GuestKernel::Backports,
        filter: Some("key_update"),
        env: &[("LB_REQUIRE_KEY_UPDATES", "1")],
    },
];

const APT_PACKAGES: &[&str] = &[
    "curl", "openssl", "nghttp2-client", "haproxy", "nginx", "wrk", "iproute2", "qemu-system-x86", "busybox-static", "xz-utils", "python3-venv", "ethtool", "valgrind",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The benchmark scenario run in the guest (instruction counts).
const GUEST_SCENARIO: &str = "guest-insns";
/// The guest's idle-memory figure (full runs only: 10k handshakes under emulation take minutes).
const GUEST_IDLE_SCENARIO: &str = "guest-idle";
/// Idle connections `guest-idle` holds, as the host's `idle-conns` does.
const GUEST_IDLE_CONNS: u32 = 10_000;

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup(),
        Cmd::BuildEbpf => build_ebpf(),
        Cmd::Test => test(),
        Cmd::VmTest { timeout, kernel, args } => std::process::exit(vm_test(&args, Duration::from_secs(timeout), kernel)?),
        Cmd::VmRun { timeout, kernel, argv } => std::process::exit(vm::run_in_guest(&argv, &[], Duration::from_secs(timeout), kernel)?),
        Cmd::Bench { quick, scenario } => bench(quick, scenario.as_deref()),
        Cmd::Ci => {
            setup()?;
            test()?;
            match vm_test(&[], Duration::from_secs(2400), None)? {
                0 => Ok(()),
                code => std::process::exit(code),
            }
        }
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Builds each VM suite's test binary on the host and runs it in its own guest.
fn vm_test(args: &[String], timeout: Duration, only: Option<GuestKernel>) -> anyhow::Result<i32> {
    // The suites start target/debug/lbd with the XDP object: both as the tree is now.
    build_lbd()?;
    let mut failed = 0;
    for VmSuite { package, target, extra, kernel, filter, env: suite_env } in VM_SUITES.iter().filter(|s| only.is_none_or(|k| k == s.kernel)) {
        let exe = test_binary(package, target)?;
        // --show-output: the kernel counters each test observed end up in the log.
        let mut argv = vec![exe, "--include-ignored".to_string(), "--show-output".to_string()];
        argv.extend(extra.iter().map(|a| a.to_string()));
        match filter {
            Some(f) if args.is_empty() => argv.push(f.to_string()),
            _ => argv.extend(args.iter().cloned()),
        }
        // Test knobs (LB_BULK_BYTES, ...) pass through to the guest.
        let env: Vec<(String, String)> =
            std::env::vars().filter(|(k, _)| k.starts_with("LB_") && !k.starts_with("LB_VM")).collect();
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend(suite_env.iter().copied());
        let code = vm::run_in_guest(&argv, &env, timeout, *kernel)?;
        eprintln!("xtask vm-test: {package} --test {target} ({kernel:?} kernel): exit {code}");
        if code != 0 {
            failed = code;
        }
    }
    Ok(failed)
}

/// Compiles one integration-test target and returns its executable's path.
fn test_binary(package: &str, target: &str) -> anyhow::Result<String> {
    let json = output(Command::new("cargo")
        .args(["test", "--locked", "--no-run", "--message-format=json-render-diagnostics", "-p", package, "--test", target])
        .current_dir(workspace_root()))?;
    json.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == target && v["profile"]["test"] == true)
        .find_map(|v| v["executable"].as_str().map(String::from))
        .with_context(|| format!("cargo built no test executable for {package} --test {target}"))
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
    run(Command::new("rustup").args(["component", "add", "clippy"]))?;
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
    openstack_venv()?;
    Ok(())
}

/// The stock OpenStack CLI the end-to-end tests drive, pinned to the versions whose wire
/// behaviour `shared/reference/openstack-cli-wire.md` records.
const OPENSTACK_CLI: &[&str] = &["python-openstackclient==10.5.0", "python-octaviaclient==3.15.0", "python-barbicanclient==7.6.0"];

/// barbicanclient 6.x still has `secret order create certificate --subject-dn` (removed in 7.0).
const OPENSTACK_CLI_BARBICAN6: &[&str] = &["python-openstackclient==10.5.0", "python-octaviaclient==3.15.0", "python-barbicanclient==6.0.0"];

/// Where the venvs live: `$LB_OPENSTACK_VENV`, else `~/.cache/lb/openstack-venv` (kept across
/// clones, so CI installs them once per machine); the barbicanclient 6 one next to it.
fn venv_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LB_OPENSTACK_VENV") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/lb/openstack-venv")
}

fn openstack_venv() -> anyhow::Result<()> {
    let main = venv_dir();
    install_venv(&main, OPENSTACK_CLI)?;
    install_venv(&main.with_file_name(format!("{}-barbican6", main.file_name().unwrap().to_string_lossy())), OPENSTACK_CLI_BARBICAN6)
}

fn install_venv(venv: &std::path::Path, packages: &[&str]) -> anyhow::Result<()> {
    let marker = venv.join(".lb-installed");
    let wanted = packages.join(" ");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return Ok(());
    }
    eprintln!("xtask setup: installing {wanted} into {}", venv.display());
    run(Command::new("python3").arg("-m").arg("venv").arg("--clear").arg(venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", "--disable-pip-version-check"]).args(packages))?;
    std::fs::write(marker, wanted)?;
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

/// `cargo build --locked TARGETS` in `profile` ("release" or "debug"); returns that profile's
/// output directory.
fn cargo_build(profile: &str, targets: &[&str]) -> anyhow::Result<PathBuf> {
    let mut build = Command::new("cargo");
    build.args(["build", "--locked"]).args(targets);
    if profile == "release" {
        build.arg("--release");
    }
    run(build.current_dir(workspace_root()))?;
    Ok(workspace_root().join("target").join(profile))
}

/// Transfer sizes of the guest instruction counts (small, large): the difference between the
/// two runs is the cost of `large - small` bytes alone.
fn guest_sizes(quick: bool) -> (u64, u64) {
    if quick { (1 << 20, 9 << 20) } else { (16 << 20, 272 << 20) }
}

/// The guest half of the benchmark: lbd's kTLS paths (raw and HTTP, download and upload) against its userspace ones, in guest
/// instructions per byte (whole guest, user + kernel, and lbd's vCPU alone), counted by our TCG plugin. Boots the
/// guest once per (mode, size). Writes `out` (JSON) for lb-bench's report.
fn guest_insns(quick: bool, profile: &str, out: &std::path::Path) -> anyhow::Result<()> {
    // `--lib` too: with a target filter cargo builds only the named targets of each package.
    let target = cargo_build(profile, &["-p", "lb-tests", "--bin", "lb-guest-transfer", "-p", "lb-tcg-insns", "--lib"])?;
    let library = target.join("liblb_tcg_insns.so");
    let (small, large) = guest_sizes(quick);
    let mut modes = serde_json::Map::new();
    // `--quick` (CI's smoke run) boots the raw download only, to stay within its time.
    let modes_run: &[&str] = if quick {
        &["userspace", "ktls"]
    } else {
        &["userspace", "ktls", "userspace-http", "ktls-http", "userspace-upload", "ktls-upload", "userspace-http-upload", "ktls-http-upload"]
    };
    for &mode in modes_run {
        let mut counts = Vec::new();
        for bytes in [small, large] {
            let count_file = workspace_root().join("target/bench").join(format!("insns-{mode}-{bytes}"));
            let _ = std::fs::remove_file(&count_file);
            std::fs::create_dir_all(count_file.parent().unwrap())?;
            let plugin = vm::Plugin { library: library.clone(), options: format!("out={}", count_file.display()) };
            let argv = vec![target.join("lb-guest-transfer").display().to_string(), "--mode".into(), mode.into(), "--bytes".into(), bytes.to_string()];
            let code = vm::run_in_guest_with(&argv, &[], Duration::from_secs(1800), Some(&plugin), GuestKernel::Stable)?.code;
            if code != 0 {
                bail!("guest transfer ({mode}, {bytes} bytes) exited with {code}");
            }
            let text = std::fs::read_to_string(&count_file).with_context(|| format!("the TCG plugin wrote no count to {}", count_file.display()))?;
            let c = plugin_counts(&text).with_context(|| format!("the TCG plugin's counts {text:?}"))?;
            eprintln!("xtask bench: guest {mode} {bytes} bytes: {} instructions in the transfer ({} of them on lbd's vCPU), {} in the whole boot", c.window, c.lbd, c.boot);
            counts.push(serde_json::json!({"bytes": bytes, "instructions": c.window, "lbd_instructions": c.lbd, "boot_instructions": c.boot}));
        }
        modes.insert(mode.into(), serde_json::Value::Array(counts));
    }
    std::fs::write(out, serde_json::to_string_pretty(&serde_json::Value::Object(modes))?)?;
    Ok(())
}

/// The guest half's memory figure: a real lbd holding [`GUEST_IDLE_CONNS`] idle TLS
/// connections on Debian's kernel, with kTLS off and on (`lb-guest-idle`, one boot each).
/// Writes `out` (JSON) for lb-bench's report.
fn guest_idle(profile: &str, out: &std::path::Path) -> anyhow::Result<()> {
    let target = cargo_build(profile, &["-p", "lb-tests", "--bin", "lb-guest-idle"])?;
    let lbd = target.join("lbd").display().to_string();
    let mut runs = Vec::new();
    for ktls in ["off", "auto"] {
        let argv = vec![target.join("lb-guest-idle").display().to_string(), "--ktls".into(), ktls.into(), "--conns".into(), GUEST_IDLE_CONNS.to_string()];
        let guest = vm::run_in_guest_with(&argv, &[("LBD_BIN", &lbd)], Duration::from_secs(1800), None, GuestKernel::Stable)?;
        if guest.code != 0 {
            bail!("lb-guest-idle --ktls {ktls} exited with {}", guest.code);
        }
        let result: serde_json::Value = serde_json::from_str(guest.result.as_deref().context("lb-guest-idle wrote no result")?)?;
        runs.push(result);
    }
    std::fs::write(out, serde_json::to_string_pretty(&runs)?)?;
    Ok(())
}

/// Instructions the TCG plugin counted in one boot (see `benches/tcg-insns`).
struct PluginCounts {
    /// The whole boot, all vCPUs.
    boot: u64,
    /// Between `lb-guest-transfer`'s start and stop marks, all vCPUs.
    window: u64,
    /// The same window on vCPU 1, where `lb-guest-transfer` pins lbd.
    lbd: u64,
}

fn plugin_counts(text: &str) -> anyhow::Result<PluginCounts> {
    let mut lines = text.lines();
    let boot = lines.next().unwrap_or_default().trim().parse()?;
    let mut field = |name: &str| -> anyhow::Result<Vec<u64>> {
        let line = lines.find_map(|l| l.strip_prefix(name).and_then(|l| l.strip_prefix(' '))).with_context(|| format!("no {name:?} line"))?;
        Ok(line.split_whitespace().map(str::parse).collect::<Result<_, _>>()?)
    };
    let marks = field("marks")?;
    if marks != [1, 1] {
        bail!("the start and stop marks ran {marks:?} times, not once each");
    }
    let window = field("window")?;
    let lbd = *window.get(1).context("no count for vCPU 1 (lbd's)")?;
    Ok(PluginCounts { boot, window: window.iter().sum(), lbd })
}

/// Builds lbd and the harness (release, or debug for `--quick`) and runs the harness.
fn bench(quick: bool, scenario: Option<&str>) -> anyhow::Result<()> {
    let profile = if quick { "debug" } else { "release" };
    // The L4 scenarios load the XDP object: build it here rather than rely on an earlier `test`.
    build_ebpf()?;
    let target = cargo_build(profile, &["-p", "lb-userspace", "--bin", "lbd", "-p", "lb-benches", "--bin", "lb-bench"])?;
    let mut cmd = Command::new(target.join("lb-bench"));
    cmd.arg("--lbd").arg(target.join("lbd")).arg("--out").arg(workspace_root().join("target/bench"));
    let wants = |name: &str| scenario.is_none_or(|s| s.split(',').any(|n| n.trim() == name));
    if wants(GUEST_SCENARIO) {
        let insns = workspace_root().join("target/bench/guest-insns.json");
        guest_insns(quick, profile, &insns)?;
        cmd.arg("--guest-insns").arg(&insns);
    }
    if !quick && wants(GUEST_IDLE_SCENARIO) {
        let idle = workspace_root().join("target/bench/guest-idle.json");
        guest_idle(profile, &idle)?;
        cmd.arg("--guest-idle").arg(&idle);
    }
    if quick {
        cmd.arg("--quick");
    }
    if let Some(s) = scenario {
        cmd.args(["--scenario", s]);
    }
    run(&mut cmd)
}

/// The XDP object and the debug lbd the end-to-end tests run (on the host and in the guest).
fn build_lbd() -> anyhow::Result<()> {
    build_ebpf()?;
    cargo_build("debug", &["-p", "lb-userspace", "--bin", "lbd"]).map(drop)
}

fn test() -> anyhow::Result<()> {
    build_lbd()?;
    // Lints first: a warning fails the suite (the toolchain is pinned, so the lint set is too).
    run(Command::new("cargo").args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]))?;
    run(Command::new("cargo")
        .args(["test", "--workspace", "--locked"])
        .env("LB_OPENSTACK_VENV", venv_dir())
        .env("LBD_BIN", workspace_root().join("target/debug/lbd")))
}
