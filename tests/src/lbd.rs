//! A real `lbd` process with its own state directory and API port, and the stock `openstack`
//! CLI (from the venv `cargo xtask setup` installs) pointed at it through `lbd openrc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `lbd` binary: `$LBD_BIN`, else next to the test executable's `deps/` directory.
pub fn lbd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("LBD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("lbd")).unwrap();
    assert!(bin.exists(), "{} is missing: build it with `cargo build -p lb-userspace` (cargo xtask test does)", bin.display());
    bin
}

/// The openstack CLI venv (`cargo xtask setup`).
pub fn venv() -> PathBuf {
    let dir = std::env::var_os("LB_OPENSTACK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or("/root".into())).join(".cache/lb/openstack-venv"));
    assert!(dir.join("bin/openstack").exists(), "no openstack CLI in {}: run `cargo xtask setup`", dir.display());
    dir
}

/// The venv with python-barbicanclient 6.0.0 (certificate orders by subject DN).
pub fn venv_barbican6() -> PathBuf {
    let main = venv();
    let dir = main.with_file_name(format!("{}-barbican6", main.file_name().unwrap().to_string_lossy()));
    assert!(dir.join("bin/openstack").exists(), "no barbicanclient 6 venv in {}: run `cargo xtask setup`", dir.display());
    dir
}

pub struct Lbd {
    pub dir: PathBuf,
    pub port: u16,
    /// Address the API listens on.
    pub ip: std::net::IpAddr,
    extra: Vec<String>,
    child: Option<Child>,
    pub env: Vec<(String, String)>,
}

impl Lbd {
    /// Starts lbd on a free port with state in `dir` and waits until it answers.
    pub fn start(dir: &Path) -> Lbd {
        Self::start_with(dir, "127.0.0.1".parse().unwrap(), &[])
    }

    /// Starts lbd with its API on `ip` and `extra` arguments to `lbd serve`. The port is free
    /// when chosen but another test may bind it before lbd does; lbd then exits and the start
    /// is retried on a new port.
    pub fn start_with(dir: &Path, ip: std::net::IpAddr, extra: &[&str]) -> Lbd {
        let mut l = Lbd { dir: dir.to_path_buf(), port: 0, ip, extra: extra.iter().map(|s| s.to_string()).collect(), child: None, env: vec![] };
        for attempt in 1.. {
            l.port = crate::free_port();
            match l.spawn() {
                Ok(()) => break,
                Err(e) if attempt < 5 && e.contains("cannot listen on") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        l
    }

    /// Starts `lbd serve` on `self.port` and waits until this process (not whatever else
    /// may answer on the port) logs that it serves there. `Err` with its log if it exits first.
    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.dir.join("lbd.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let offset = log.metadata().unwrap().len() as usize;
        let addr = std::net::SocketAddr::new(self.ip, self.port);
        let mut child = Command::new(lbd_binary())
            .args(["serve", "--api-listen", &addr.to_string()])
            .args(&self.extra)
            .env("LBD_STATE_DIR", self.dir.join("state"))
            .env("LBD_LOG", "info,lb_userspace=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let ready = format!("lbd serving the control API, /metrics and /healthz api_listen={addr} ");
        let started = Instant::now();
        loop {
            let log = self.log().get(offset..).unwrap_or_default().to_string();
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!("lbd exited ({status}) before serving on {addr}: {log}"));
            }
            if log.contains(&ready) {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("lbd did not serve on {addr} within 30 s: {log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        let rc = Command::new(lbd_binary()).arg("openrc").env("LBD_STATE_DIR", self.dir.join("state")).output().unwrap();
        self.env = String::from_utf8(rc.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        Ok(())
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("http://{}", std::net::SocketAddr::new(self.ip, self.port))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("lbd.log")).unwrap_or_default()
    }

    /// `kill -9`, then start again on the same port and state.
    pub fn crash_and_restart(&mut self) {
        self.kill9();
        self.spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited with status 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else { return false };
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Runs `openstack ARGS` as the admin; returns the output whatever the status.
    pub fn openstack(&self, args: &[&str]) -> Output {
        self.openstack_as(&[], args)
    }

    /// Runs `openstack ARGS` with `overrides` on top of the admin environment.
    pub fn openstack_as(&self, overrides: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = Command::new(venv().join("bin/openstack"));
        cmd.args(args).env_clear().env("PATH", "/usr/bin:/bin").env("HOME", std::env::var("HOME").unwrap_or("/root".into()));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in overrides {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// Runs a bash script (`set -euo pipefail`) with the admin environment and the openstack CLI
    /// on PATH, in `cwd`: how-to commands run verbatim. Returns stdout; panics with stderr.
    pub fn script(&self, cwd: &Path, script: &str) -> String {
        self.script_in(&venv(), cwd, script)
    }

    /// [`Lbd::script`] with the CLI from another venv (e.g. [`venv_barbican6`]).
    pub fn script_in(&self, venv: &Path, cwd: &Path, script: &str) -> String {
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", venv.join("bin").display());
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(format!("set -euo pipefail\n{script}")).current_dir(cwd).env("PATH", path);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "script failed:\n{script}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- lbd log tail ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log().lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `openstack ARGS`, which must succeed; its stdout, trimmed.
    pub fn os(&self, args: &[&str]) -> String {
        let out = self.openstack(args);
        assert!(
            out.status.success(),
            "openstack {args:?} failed: {}{}\n--- lbd log tail ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log().lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `openstack ARGS`, which must fail; its stderr.
    pub fn os_fails(&self, args: &[&str]) -> String {
        let out = self.openstack(args);
        assert!(!out.status.success(), "openstack {args:?} should have failed: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        self.stop();
    }
}
