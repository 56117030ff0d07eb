//! `cargo xtask vm-test`: run test binaries as root inside a QEMU guest booted on Debian's own
//! kernel (which has kTLS), because this host's kernel does not.
//!
//! The guest is a busybox initramfs that loads the needed modules, mounts the host root read-only
//! over 9p plus a small read-write exchange directory, chroots into that view (so host-built
//! binaries run unchanged), runs one script, writes its exit status to the exchange directory and
//! powers off. One guest per test binary. Timings inside the guest are emulated (TCG) and mean
//! nothing; the guest proves correctness only.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{output, run, workspace_root};

/// Exit status of `cargo xtask vm-test` when the guest never reported a result.
pub const HARNESS_FAILURE: i32 = 125;

/// Modules the guest loads at boot (dependencies resolved by modprobe from modules.dep).
/// Crypto templates are loaded up front so kTLS never depends on request_module at run time.
const MODULES: &[&str] = &[
    "virtio_pci", "virtio_console", "9pnet_virtio", "9p", "tls", "veth", "gcm", "ghash_generic", "ctr",
    "chacha20poly1305", "chacha_generic", "poly1305_generic", "aesni_intel", "chacha_x86_64", "poly1305_x86_64",
    "ghash_clmulni_intel", "sch_ingress", "cls_bpf",
];

const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /etc/lb-modules); do modprobe "$m" 2>/dev/null || echo "lb-vm: module $m not loaded"; done
xfer=$(sed -n 's/.*lb_xfer=\([^ ]*\).*/\1/p' /proc/cmdline)
keep=$(sed -n 's/.*lb_keep=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p /host /hosttmp
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host || echo "lb-vm: no host root"
# The guest gets a fresh writable /tmp; a workspace that lives under the host's /tmp (a CI clone)
# stays visible through a bind mount of the host's copy.
mount -o bind /host/tmp /hosttmp
mount -t tmpfs tmp /host/tmp
case "$keep" in /tmp/?*) rel=${keep#/tmp/}; mkdir -p "/host/tmp/$rel"; mount -o bind "/hosttmp/$rel" "/host/tmp/$rel" ;; esac
mkdir -p "/host$xfer"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 xfer "/host$xfer" || echo "lb-vm: no exchange dir"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs shm /host/dev/shm
mount -t tmpfs run /host/run
mount -t bpf bpf /host/sys/fs/bpf
ip link set lo up
echo "lb-vm: guest up, kernel $(uname -r), $(nproc) vCPUs"
chroot /host /bin/sh "$xfer/run.sh"
echo $? > "/host$xfer/status"
sync
poweroff -f
"#;

/// A Debian kernel unpacked in the cache: the uncompressed vmlinux and its module tree.
struct Kernel {
    version: String,
    root: PathBuf,
}

impl Kernel {
    fn vmlinux(&self) -> PathBuf {
        self.root.join("vmlinux")
    }

    fn modules(&self) -> PathBuf {
        self.root.join("x/lib/modules").join(&self.version)
    }
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("LB_VM_CACHE") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("target/vm"),
    }
}

/// Fetches (once) the kernel package `linux-image-amd64` currently depends on, unpacks it and
/// extracts the uncompressed vmlinux (booting it saves ~3 s per guest under TCG).
fn kernel() -> anyhow::Result<Kernel> {
    let deps = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64") && !p.contains("cloud"))
        .context("apt-cache depends linux-image-amd64 names no kernel package")?
        .to_string();
    let version = package.trim_start_matches("linux-image-").to_string();
    let root = cache_dir().join(&package);
    let kernel = Kernel { version, root };
    if kernel.vmlinux().exists() && kernel.modules().join("modules.dep").exists() {
        return Ok(kernel);
    }
    eprintln!("xtask vm-test: fetching {package} into {}", kernel.root.display());
    // Kernels fetched before this one (Debian moved on) are not needed again.
    for old in std::fs::read_dir(cache_dir()).into_iter().flatten().filter_map(|e| e.ok()) {
        if old.file_name().to_string_lossy().starts_with("linux-image-") {
            let _ = std::fs::remove_dir_all(old.path());
        }
    }
    std::fs::create_dir_all(&kernel.root)?;
    run(Command::new("apt-get").args(["download", &package]).current_dir(&kernel.root))?;
    let deb = std::fs::read_dir(&kernel.root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download produced no .deb")?;
    unpack(&deb, &kernel.root.join("x"))?;
    std::fs::remove_file(&deb)?;
    run(Command::new("busybox").arg("depmod").arg("-b").arg(kernel.root.join("x")).arg(&kernel.version))?;
    let boot = kernel.root.join("x/boot");
    extract_vmlinux(&boot.join(format!("vmlinuz-{}", kernel.version)), &kernel.vmlinux())?;
    std::fs::remove_dir_all(boot)?;
    Ok(kernel)
}

/// Parts of the kernel package unpacked: the compressed kernel, the module lists, and only the
/// module directories `MODULES` and their dependencies come from (~50 MB of the ~450 MB tree; CI
/// machines may be short of disk).
const UNPACKED: &[&str] = &[
    "./boot/vmlinuz-*", "./lib/modules/*/modules.*", "./lib/modules/*/kernel/arch/*",
    "./lib/modules/*/kernel/crypto/*", "./lib/modules/*/kernel/lib/*", "./lib/modules/*/kernel/fs/*",
    "./lib/modules/*/kernel/net/*", "./lib/modules/*/kernel/drivers/virtio/*",
    "./lib/modules/*/kernel/drivers/char/*", "./lib/modules/*/kernel/drivers/net/veth.ko",
];

/// Unpacks the `UNPACKED` parts of a .deb into `into`.
fn unpack(deb: &Path, into: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(into)?;
    let mut tarfile = Command::new("dpkg-deb").arg("--fsys-tarfile").arg(deb).stdout(Stdio::piped()).spawn()?;
    let untar = Command::new("tar")
        .args(["-x", "--wildcards", "-C"])
        .arg(into)
        .args(UNPACKED)
        .stdin(tarfile.stdout.take().unwrap())
        .status()?;
    if !tarfile.wait()?.success() || !untar.success() {
        bail!("could not unpack {}", deb.display());
    }
    Ok(())
}

/// Finds the XZ stream inside a bzImage and decompresses it (Debian builds with CONFIG_KERNEL_XZ).
fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> anyhow::Result<()> {
    let image = std::fs::read(vmlinuz)?;
    let magic = b"\xfd7zXZ\x00";
    let start = image.windows(magic.len()).position(|w| w == magic).context("no XZ stream in vmlinuz")?;
    let mut xz = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(out)?)
        .spawn()?;
    // xz stops reading at the end of the stream; the bytes after it are not ours to feed.
    match xz.stdin.take().unwrap().write_all(&image[start..]) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    if !xz.wait()?.success() {
        bail!("xz could not decompress the kernel in {}", vmlinuz.display());
    }
    Ok(())
}

/// Builds the initramfs: static busybox, the init script, and the modules in `MODULES` with
/// their dependencies (read from the kernel's modules.dep).
fn initramfs(kernel: &Kernel) -> anyhow::Result<PathBuf> {
    let out = kernel.root.join("initramfs.cpio");
    let stage = kernel.root.join("initramfs");
    let _ = std::fs::remove_dir_all(&stage);
    for d in ["bin", "sbin", "etc", "proc", "sys", "dev", "host"] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    std::fs::copy("/bin/busybox", stage.join("bin/busybox")).context("busybox-static is not installed")?;
    for applet in ["sh", "mount", "modprobe", "insmod", "sed", "cat", "mkdir", "ip", "chroot", "poweroff", "sync", "echo", "uname", "nproc"] {
        std::os::unix::fs::symlink("busybox", stage.join("bin").join(applet))?;
    }
    std::os::unix::fs::symlink("../bin/busybox", stage.join("sbin/modprobe"))?;
    write_exec(&stage.join("init"), INIT)?;
    std::fs::write(stage.join("etc/lb-modules"), MODULES.join("\n"))?;

    let deps = std::fs::read_to_string(kernel.modules().join("modules.dep"))?;
    let mut wanted: Vec<String> = Vec::new();
    for line in deps.lines() {
        let Some((module, rest)) = line.split_once(':') else { continue };
        let name = Path::new(module).file_stem().unwrap().to_string_lossy().replace('-', "_");
        if MODULES.contains(&name.as_str()) {
            wanted.push(module.to_string());
            wanted.extend(rest.split_whitespace().map(String::from));
        }
    }
    let dest = stage.join("lib/modules").join(&kernel.version);
    for m in &wanted {
        let to = dest.join(m);
        std::fs::create_dir_all(to.parent().unwrap())?;
        std::fs::copy(kernel.modules().join(m), &to)?;
    }
    for f in ["modules.builtin", "modules.order"] {
        std::fs::copy(kernel.modules().join(f), dest.join(f))?;
    }
    run(Command::new("busybox").arg("depmod").arg("-b").arg(&stage).arg(&kernel.version))?;
    let list = output(Command::new("sh").arg("-c").arg("find . -mindepth 1 | sort").current_dir(&stage))?;
    let mut cpio = Command::new("busybox")
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(&stage)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out)?)
        .stderr(Stdio::null())
        .spawn()?;
    cpio.stdin.take().unwrap().write_all(format!("{list}\n").as_bytes())?;
    if !cpio.wait()?.success() {
        bail!("busybox cpio failed");
    }
    Ok(out)
}

fn write_exec(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Quotes one word for the guest's `sh`.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Boots one guest that runs `argv` (as root, cwd = workspace root) and returns its exit status.
/// Output streams to our stdout as the guest prints it.
pub fn run_in_guest(argv: &[String], env: &[(&str, &str)], timeout: Duration) -> anyhow::Result<i32> {
    Ok(run_in_guest_with(argv, env, timeout, None)?.code)
}

/// What a guest run left: its exit status, and what it wrote to `$LB_GUEST_RESULT` (a file in
/// the exchange directory), if anything.
pub struct GuestRun {
    pub code: i32,
    pub result: Option<String>,
}

/// A TCG plugin to load into the guest's QEMU: the library and its options (`key=value,...`).
/// With a plugin the vCPUs share one TCG thread, so the plugin's counts are exact.
pub struct Plugin {
    pub library: PathBuf,
    pub options: String,
}

/// [`run_in_guest`], optionally with a TCG plugin loaded.
pub fn run_in_guest_with(argv: &[String], env: &[(&str, &str)], timeout: Duration, plugin: Option<&Plugin>) -> anyhow::Result<GuestRun> {
    let kernel = kernel()?;
    let initrd = initramfs(&kernel)?;
    let xfer = cache_dir().join(format!("xfer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&xfer);
    std::fs::create_dir_all(&xfer)?;
    let xfer = xfer.canonicalize()?;

    let mut script = String::from("export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\n");
    script.push_str("export LB_VM=1 RUST_BACKTRACE=1\n");
    script.push_str(&format!("export LB_GUEST_RESULT={}\n", quote(&xfer.join("result").to_string_lossy())));
    for (k, v) in env {
        script.push_str(&format!("export {k}={}\n", quote(v)));
    }
    script.push_str(&format!("cd {}\n", quote(&workspace_root().to_string_lossy())));
    script.push_str(&argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "));
    script.push('\n');
    std::fs::write(xfer.join("run.sh"), script)?;

    let accel = match plugin {
        Some(_) => "tcg,thread=single".to_string(),
        None => std::env::var("LB_VM_ACCEL").unwrap_or_else(|_| "tcg".into()),
    };
    let mut qemu = Command::new("qemu-system-x86_64");
    if let Some(p) = plugin {
        qemu.arg("-plugin").arg(format!("{},{}", p.library.display(), p.options));
    }
    qemu.args(["-accel", &accel, "-cpu", "max", "-smp", "2", "-m", "2048", "-nodefaults", "-no-reboot"])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none", "-nic", "none"])
        .arg("-kernel")
        .arg(kernel.vmlinux())
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet loglevel=3 panic=-1 lb_xfer={} lb_keep={}",
            xfer.display(),
            workspace_root().canonicalize()?.display()
        ))
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
        .arg("-virtfs")
        .arg(format!("local,path={},mount_tag=xfer,security_model=none", xfer.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    eprintln!("xtask vm-test: booting {} ({accel}) for: {}", kernel.version, argv.join(" "));
    let started = Instant::now();
    let mut child = qemu.spawn().context("failed to start qemu-system-x86_64 (cargo xtask setup installs it)")?;

    // Stream the console, keeping its tail for the failure report.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            let _ = tx.send(line);
        }
    });
    let mut tail: std::collections::VecDeque<String> = Default::default();
    let finished = loop {
        while let Ok(line) = rx.try_recv() {
            if tail.len() == 40 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        if child.try_wait()?.is_some() {
            break true;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = reader.join();
    tail.extend(rx.try_iter());
    let status = std::fs::read_to_string(xfer.join("status")).ok();
    let result = std::fs::read_to_string(xfer.join("result")).ok();
    let _ = std::fs::remove_dir_all(&xfer);
    eprintln!("xtask vm-test: guest ran {:.1}s", started.elapsed().as_secs_f64());
    let code = match status.and_then(|s| s.trim().parse::<i32>().ok()) {
        Some(code) => code,
        None => {
            let why = if finished { "the guest powered off without reporting a status" } else { "the guest timed out" };
            let tail: Vec<String> = tail.into_iter().rev().take(40).rev().collect();
            eprintln!("xtask vm-test: harness failure: {why}; console tail:\n{}", tail.join("\n"));
            HARNESS_FAILURE
        }
    };
    Ok(GuestRun { code, result })
}
