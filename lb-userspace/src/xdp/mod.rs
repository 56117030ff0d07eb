//! Loading lb's XDP program (aya) onto an interface: native (driver) mode where the driver
//! supports it, generic mode otherwise with the reason logged; its per-CPU counters read back
//! for `/metrics`. The program is attached through a bpf_link owned by this process, so it is
//! detached when lbd exits, also on SIGKILL (the kernel closes the link with the last fd).

use std::path::Path;

use aya::Ebpf;
use aya::maps::PerCpuArray;
use aya::programs::{Xdp, XdpMode};
use lb_common::xdp::{COUNTER_SLOTS, Counter};

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("cannot load the XDP object {path}: {error} (build it with `cargo xtask build-ebpf`)")]
    Load { path: String, error: String },
    #[error("the XDP object has no program {0:?}")]
    NoProgram(&'static str),
    #[error("the kernel refused the XDP program: {0}")]
    Verify(String),
    #[error("cannot attach XDP to {interface}: native mode: {native}; generic mode: {generic}")]
    Attach { interface: String, native: String, generic: String },
    #[error("cannot read the XDP counters: {0}")]
    Counters(String),
}

/// An attached program; dropping it detaches it.
pub struct Attachment {
    ebpf: Ebpf,
    pub interface: String,
    /// `native` or `generic`.
    pub mode: &'static str,
    /// Why native mode was not used (empty when it was).
    pub fallback_reason: String,
}

const PROGRAM: &str = "lb_xdp";

/// Loads `object` and attaches its XDP program to `interface`.
pub fn attach(object: &Path, interface: &str) -> Result<Attachment, XdpError> {
    let mut ebpf = Ebpf::load_file(object).map_err(|e| XdpError::Load { path: object.display().to_string(), error: e.to_string() })?;
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or(XdpError::NoProgram(PROGRAM))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| XdpError::Verify(e.to_string()))?;
    program.load().map_err(|e| XdpError::Verify(e.to_string()))?;
    let (mode, fallback_reason) = match program.attach(interface, XdpMode::Driver) {
        Ok(_) => ("native", String::new()),
        Err(native) => {
            let native = native.to_string();
            program
                .attach(interface, XdpMode::Skb)
                .map_err(|generic| XdpError::Attach { interface: interface.into(), native: native.clone(), generic: generic.to_string() })?;
            ("generic", native)
        }
    };
    match mode {
        "native" => tracing::info!(interface, "XDP program attached in native (driver) mode"),
        _ => tracing::warn!(interface, reason = %fallback_reason, "XDP program attached in generic mode: the driver refused native mode"),
    }
    Ok(Attachment { ebpf, interface: interface.into(), mode, fallback_reason })
}

impl Attachment {
    /// Counter totals over all CPUs, indexed by [`Counter`].
    pub fn counters(&self) -> Result<[u64; COUNTER_SLOTS as usize], XdpError> {
        let map = self.ebpf.map("COUNTERS").ok_or_else(|| XdpError::Counters("no COUNTERS map".into()))?;
        let array: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(|e| XdpError::Counters(e.to_string()))?;
        let mut out = [0u64; COUNTER_SLOTS as usize];
        for c in [Counter::Packets, Counter::Bytes, Counter::Passed] {
            let per_cpu = array.get(&(c as u32), 0).map_err(|e| XdpError::Counters(e.to_string()))?;
            out[c as usize] = per_cpu.iter().sum();
        }
        Ok(out)
    }
}

impl Attachment {
    /// Copies the program's counters into `metrics` once a second, for as long as the task
    /// runs; the attachment (and so the program) lives exactly as long as the task.
    pub fn spawn_metrics(self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> tokio::task::JoinHandle<()> {
        use crate::metrics::{InterfaceLabels, XdpAttachLabels};
        let labels = InterfaceLabels { interface: self.interface.clone() };
        metrics.xdp_attached.get_or_create(&XdpAttachLabels { interface: self.interface.clone(), mode: self.mode }).set(1);
        tokio::spawn(async move {
            let mut last = [0u64; COUNTER_SLOTS as usize];
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                match self.counters() {
                    Ok(now) => {
                        let delta = |c: Counter| now[c as usize].saturating_sub(last[c as usize]);
                        metrics.xdp_packets.get_or_create(&labels).inc_by(delta(Counter::Packets));
                        metrics.xdp_bytes.get_or_create(&labels).inc_by(delta(Counter::Bytes));
                        metrics.xdp_passed.get_or_create(&labels).inc_by(delta(Counter::Passed));
                        last = now;
                    }
                    Err(e) => tracing::warn!(interface = %self.interface, error = %e, "XDP counters unreadable"),
                }
            }
        })
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        tracing::info!(interface = %self.interface, "XDP program detached");
    }
}
