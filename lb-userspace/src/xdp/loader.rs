//! Loading lb's XDP object once and attaching its program to each interface: native (driver)
//! mode where the driver supports it, generic mode otherwise with the reason logged. The
//! program is attached through bpf_links owned by this process, so it is detached when lbd
//! exits, also on SIGKILL (the kernel closes the links with the last fd), and a restart
//! attaches afresh.

use std::path::Path;

use aya::Ebpf;
use aya::programs::{Xdp, XdpMode};

use super::XdpError;

/// The program's name in the object.
const PROGRAM: &str = "lb_xdp";

/// One interface the program runs on.
#[derive(Clone, Debug)]
pub struct Interface {
    pub name: String,
    /// `native` or `generic`.
    pub mode: &'static str,
    /// Why native mode was not used (empty when it was).
    pub fallback_reason: String,
}

/// Loads `object` and attaches its program to every interface in `interfaces`.
pub fn load(object: &Path, interfaces: &[String]) -> Result<(Ebpf, Vec<Interface>), XdpError> {
    let mut ebpf = Ebpf::load_file(object).map_err(|e| XdpError::Load { path: object.display().to_string(), error: e.to_string() })?;
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or(XdpError::NoProgram(PROGRAM))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| XdpError::Verify(e.to_string()))?;
    program.load().map_err(|e| XdpError::Verify(format!("{e:#}")))?;
    let mut attached = Vec::new();
    for interface in interfaces {
        let (mode, fallback_reason) = match program.attach(interface, XdpMode::Driver) {
            Ok(_) => ("native", String::new()),
            Err(native) => {
                let native = native.to_string();
                program
                    .attach(interface, XdpMode::Skb)
                    .map_err(|generic| XdpError::Attach { interface: interface.clone(), native: native.clone(), generic: generic.to_string() })?;
                ("generic", native)
            }
        };
        match mode {
            "native" => tracing::info!(interface, "XDP program attached in native (driver) mode"),
            _ => tracing::warn!(interface, reason = %fallback_reason, "XDP program attached in generic mode: the driver refused native mode"),
        }
        enable_forwarding(interface)?;
        attached.push(Interface { name: interface.clone(), mode, fallback_reason });
    }
    Ok((ebpf, attached))
}

/// `bpf_fib_lookup` answers only for packets arriving on an interface with IPv4 forwarding
/// on (it is a router's lookup): turn it on for each interface the program runs on.
fn enable_forwarding(interface: &str) -> Result<(), XdpError> {
    let path = format!("/proc/sys/net/ipv4/conf/{interface}/forwarding");
    let on = std::fs::read_to_string(&path).map(|v| v.trim() == "1").unwrap_or(false);
    if !on {
        std::fs::write(&path, "1").map_err(|e| XdpError::Forwarding { interface: interface.into(), error: e.to_string() })?;
        tracing::warn!(interface, "enabled IPv4 forwarding on the interface (net.ipv4.conf.{interface}.forwarding=1): the XDP data path resolves next hops with the kernel's forwarding lookup");
    }
    Ok(())
}
