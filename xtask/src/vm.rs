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

/// Which Debian kernel a guest boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GuestKernel {
    /// The kernel `linux-image-amd64` depends on in this host's apt sources (bookworm: 6.1),
    /// which every guest suite runs on.
    Stable,
    /// The kernel of Debian 13 (trixie, 6.12), fetched from the Debian mirror without touching
    /// the host's apt sources: kTLS and splice as kernels since 6.5 implement them
    /// (`MSG_SPLICE_PAGES` instead of `sendpage`), which operators on current Debian run.
    Trixie,
    /// The newest kernel in Debian 13's backports (fetched the same way): one that takes new
    /// kTLS keys on a live socket (TLS 1.3 key updates, Linux 6.14 and later).
    Backports,
}

/// A Debian kernel unpacked in the cache: the image QEMU boots (the uncompressed vmlinux where
/// it could be extracted) and its module tree.
struct Kernel {
    version: String,
    root: PathBuf,
}

impl Kernel {
    /// What `-kernel` gets: the uncompressed vmlinux (booting it saves ~3 s per guest under
    /// TCG), or the compressed image where the kernel is not XZ-compressed.
    fn image(&self) -> PathBuf {
        let vmlinux = self.root.join("vmlinux");
        if vmlinux.exists() { vmlinux } else { self.root.join("vmlinuz") }
    }

    /// The `lib/modules` tree: `x/lib/modules` in older packages, `x/usr/lib/modules` in newer.
    fn modules_base(&self) -> PathBuf {
        let usr = self.root.join("x/usr");
        if usr.join("lib/modules").exists() { usr } else { self.root.join("x") }
    }

    fn modules(&self) -> PathBuf {
        self.modules_base().join("lib/modules").join(&self.version)
    }

    fn ready(&self) -> bool {
        self.image().exists() && self.modules().join("modules.dep").exists()
    }
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("LB_VM_CACHE") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("target/vm"),
    }
}

fn kernel(which: GuestKernel) -> anyhow::Result<Kernel> {
    match which {
        GuestKernel::Stable => stable_kernel(),
        GuestKernel::Trixie => mirror_kernel("trixie"),
        GuestKernel::Backports => mirror_kernel("trixie-backports"),
    }
}

/// Fetches (once) the kernel package `linux-image-amd64` currently depends on and unpacks it.
fn stable_kernel() -> anyhow::Result<Kernel> {
    let deps = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64") && !p.contains("cloud"))
        .context("apt-cache depends linux-image-amd64 names no kernel package")?
        .to_string();
    let version = package.trim_start_matches("linux-image-").to_string();
    let kernel = Kernel { version, root: cache_dir().join(&package) };
    if kernel.ready() {
        return Ok(kernel);
    }
    eprintln!("xtask vm-test: fetching {package} into {}", kernel.root.display());
    forget_other_kernels(&cache_dir(), &kernel.root);
    std::fs::create_dir_all(&kernel.root)?;
    run(Command::new("apt-get").args(["download", &package]).current_dir(&kernel.root))?;
    let debs: Vec<PathBuf> = std::fs::read_dir(&kernel.root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    prepare(&kernel, &debs)?;
    Ok(kernel)
}

/// The Debian mirror kernels of other releases come from (`LB_VM_DEBIAN_MIRROR` overrides it).
fn debian_mirror() -> String {
    std::env::var("LB_VM_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

/// Fetches (once) the newest `linux-image-*-amd64` of Debian's `suite` and the packages of the
/// same kernel version it depends on (newer kernels split the image, the modules and the module
/// lists into separate packages), each checked against the SHA256 the suite's index gives.
fn mirror_kernel(suite: &str) -> anyhow::Result<Kernel> {
    let mirror = debian_mirror();
    let dir = cache_dir().join(suite);
    std::fs::create_dir_all(&dir)?;
    let index_path = dir.join("Packages");
    let fresh = std::fs::metadata(&index_path).and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(24 * 3600));
    if !fresh {
        let url = format!("{mirror}/dists/{suite}/main/binary-amd64/Packages.xz");
        let xz = index_path.with_extension("xz");
        run(Command::new("curl").args(["-fsSL", "--retry", "3", "-o"]).arg(&xz).arg(&url))?;
        let _ = std::fs::remove_file(&index_path);
        run(Command::new("xz").arg("-d").arg(&xz))?;
    }
    let index = std::fs::read_to_string(&index_path)?;
    let packages: Vec<Paragraph> = index.split("\n\n").filter_map(Paragraph::parse).collect();
    let image = packages
        .iter()
        .filter_map(|p| {
            let version = p.name.strip_prefix("linux-image-")?.strip_suffix("-amd64")?;
            let numbers: Vec<u32> = version.split(['.', '+', '-']).map_while(|n| n.parse().ok()).collect();
            (version.chars().next()?.is_ascii_digit() && !version.contains("cloud") && !version.contains("rt")).then_some((numbers, p))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, p)| p)
        .with_context(|| format!("{suite} has no linux-image-*-amd64 package"))?;
    let version = image.name.trim_start_matches("linux-image-").to_string();
    let kernel = Kernel { version: version.clone(), root: dir.join(&image.name) };
    if kernel.ready() {
        return Ok(kernel);
    }
    eprintln!("xtask vm-test: fetching {} from {mirror} ({suite}) into {}", image.name, kernel.root.display());
    forget_other_kernels(&dir, &kernel.root);
    std::fs::create_dir_all(&kernel.root)?;
    // The image and every package of the same kernel version it depends on, transitively.
    let mut wanted = vec![image];
    let mut i = 0;
    while i < wanted.len() {
        for dep in wanted[i].depends.clone() {
            if dep.contains(&version) && !wanted.iter().any(|w| w.name == dep) {
                wanted.push(packages.iter().find(|p| p.name == dep).with_context(|| format!("{dep} is not in {suite}"))?);
            }
        }
        i += 1;
    }
    let mut debs = Vec::new();
    for p in wanted {
        let deb = kernel.root.join(Path::new(&p.filename).file_name().context("package file name")?);
        run(Command::new("curl").args(["-fsSL", "--retry", "3", "-o"]).arg(&deb).arg(format!("{mirror}/{}", p.filename)))?;
        let sum = output(Command::new("sha256sum").arg(&deb))?;
        if sum.split_whitespace().next() != Some(p.sha256.as_str()) {
            bail!("{} does not match the SHA256 {suite}'s index gives", deb.display());
        }
        debs.push(deb);
    }
    prepare(&kernel, &debs)?;
    Ok(kernel)
}

/// One package's entry in a Debian `Packages` index: what fetching it needs.
struct Paragraph {
    name: String,
    filename: String,
    sha256: String,
    /// Names of the packages it depends on (versions and alternatives dropped).
    depends: Vec<String>,
}

impl Paragraph {
    fn parse(text: &str) -> Option<Self> {
        let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string());
        let depends = field("Depends: ").unwrap_or_default();
        Some(Paragraph {
            name: field("Package: ")?,
            filename: field("Filename: ")?,
            sha256: field("SHA256: ")?,
            depends: depends.split(',').filter_map(|d| d.split(['|', '(']).next()).map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect(),
        })
    }
}

/// Kernels fetched into `dir` before `keep` (Debian moved on) are not needed again.
fn forget_other_kernels(dir: &Path, keep: &Path) {
    for old in std::fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok()) {
        if old.file_name().to_string_lossy().starts_with("linux-image-") && old.path() != keep {
            let _ = std::fs::remove_dir_all(old.path());
        }
    }
}

/// Unpacks the kernel packages `debs` into `kernel.root/x` (only what `WANTED` names), makes the
/// modules loadable by busybox (decompressed, with a modules.dep), and puts the boot image in
/// place; the .debs are deleted.
fn prepare(kernel: &Kernel, debs: &[PathBuf]) -> anyhow::Result<()> {
    let x = kernel.root.join("x");
    for deb in debs {
        unpack(deb, &x)?;
        std::fs::remove_file(deb)?;
    }
    let modules = kernel.modules();
    // busybox's modprobe loads plain .ko files only.
    for (ext, unpack) in [("xz", "xz -d -q"), ("zst", "zstd -d -q --rm")] {
        let found = output(Command::new("find").arg(&modules).args(["-name", &format!("*.ko.{ext}")]))?;
        if !found.is_empty() {
            run(Command::new("sh").arg("-c").arg(format!("find \"$0\" -name '*.ko.{ext}' -exec {unpack} {{}} +")).arg(&modules))?;
        }
    }
    run(Command::new("busybox").arg("depmod").arg("-b").arg(kernel.modules_base()).arg(&kernel.version))?;
    let vmlinuz = [x.join("boot").join(format!("vmlinuz-{}", kernel.version)), modules.join("vmlinuz")]
        .into_iter()
        .find(|p| p.exists())
        .context("the kernel packages hold no vmlinuz")?;
    if extract_vmlinux(&vmlinuz, &kernel.root.join("vmlinux")).is_err() {
        // Not XZ (newer Debian kernels are zstd-compressed): boot the compressed image.
        let _ = std::fs::remove_file(kernel.root.join("vmlinux"));
        std::fs::rename(&vmlinuz, kernel.root.join("vmlinuz"))?;
    }
    let _ = std::fs::remove_dir_all(x.join("boot"));
    let _ = std::fs::remove_file(modules.join("vmlinuz"));
    Ok(())
}

/// Parts of a kernel package unpacked, below `lib/modules/<version>/` (or `usr/lib/...`): the
/// module lists, and only the module directories `MODULES` and their dependencies come from
/// (~50 MB of the ~450 MB tree; CI machines may be short of disk); plus the kernel image.
const WANTED: &[&str] = &[
    "modules.", "kernel/arch/", "kernel/crypto/", "kernel/lib/", "kernel/fs/", "kernel/net/",
    "kernel/drivers/virtio/", "kernel/drivers/char/", "kernel/drivers/net/veth.ko", "vmlinuz",
];

/// Unpacks the parts of a .deb that `WANTED` names (and `boot/vmlinuz-*`) into `into`.
fn unpack(deb: &Path, into: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(into)?;
    let listing = output(Command::new("sh").arg("-c").arg("dpkg-deb --fsys-tarfile \"$0\" | tar -t").arg(deb))?;
    let members: Vec<&str> = listing
        .lines()
        .filter(|m| !m.ends_with('/'))
        .filter(|m| {
            let path = m.trim_start_matches("./");
            let path = path.strip_prefix("usr/").unwrap_or(path);
            if path.starts_with("boot/vmlinuz-") {
                return true;
            }
            // lib/modules/<version>/<rest>
            let rest = path.strip_prefix("lib/modules/").and_then(|p| p.split_once('/')).map(|(_, r)| r);
            rest.is_some_and(|r| WANTED.iter().any(|w| r.starts_with(w)))
        })
        .collect();
    if members.is_empty() {
        return Ok(());
    }
    let list = into.join(".members");
    std::fs::write(&list, members.join("\n"))?;
    let mut tarfile = Command::new("dpkg-deb").arg("--fsys-tarfile").arg(deb).stdout(Stdio::piped()).spawn()?;
    let untar = Command::new("tar")
        .args(["-x", "-C"])
        .arg(into)
        .arg("-T")
        .arg(&list)
        .stdin(tarfile.stdout.take().unwrap())
        .status()?;
    std::fs::remove_file(&list)?;
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
        if kernel.modules().join(f).exists() {
            std::fs::copy(kernel.modules().join(f), dest.join(f))?;
        }
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
pub fn run_in_guest(argv: &[String], env: &[(&str, &str)], timeout: Duration, which: GuestKernel) -> anyhow::Result<i32> {
    Ok(run_in_guest_with(argv, env, timeout, None, which)?.code)
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
pub fn run_in_guest_with(argv: &[String], env: &[(&str, &str)], timeout: Duration, plugin: Option<&Plugin>, which: GuestKernel) -> anyhow::Result<GuestRun> {
    let kernel = kernel(which)?;
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
        .arg(kernel.image())
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
