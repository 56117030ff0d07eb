//! A QEMU TCG plugin (QEMU's plugin API, version 1 as in QEMU 7.2) that counts every guest
//! instruction executed, user and kernel, per vCPU, and writes the counts to a file when QEMU
//! exits:
//!
//! ```text
//! 123456789            the whole run, all vCPUs
//! vcpu 61728394 ...    the whole run, per vCPU index
//! marks 1 1            how many times the start and the stop mark ran
//! window 1234 ...      per vCPU, between the last start and the last stop mark (absent if unmarked)
//! ```
//!
//! At translation time each translation block gets an execution callback carrying the block's
//! instruction count; the callback adds it to the executing vCPU's counter. Per-vCPU counts let
//! a guest that pins one program to one vCPU attribute instructions to it (QEMU 7.2's inline
//! operations cannot tell vCPUs apart).
//!
//! The guest marks the window it wants measured with two instructions that compilers never
//! emit: `xchg bx, bx` ([`START_MARK`], Bochs' "magic breakpoint") snapshots the counters, and
//! `xchg cx, cx` ([`STOP_MARK`]) snapshots them again. Both are no-ops to the CPU, so a guest
//! program runs the same with or without the plugin.
//!
//! Counts are exact only when vCPUs share one TCG thread (`-accel tcg,thread=single`, which
//! `cargo xtask bench` passes): with one thread per vCPU the callbacks would race.
//!
//! Load: `-plugin path/liblb_tcg_insns.so,out=/path/to/count`.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

type PluginId = u64;
type TbTransCb = extern "C" fn(PluginId, *mut c_void);
type AtExitCb = extern "C" fn(PluginId, *mut c_void);
type VcpuUdataCb = extern "C" fn(u32, *mut c_void);

/// `QEMU_PLUGIN_CB_NO_REGS`: the callback reads no guest registers.
const CB_NO_REGS: c_int = 0;
/// vCPUs counted; QEMU's vCPU indices above this are folded into the last counter.
const MAX_VCPUS: usize = 64;
/// `xchg bx, bx`: snapshot the counters at the window's start.
pub const START_MARK: [u8; 3] = [0x66, 0x87, 0xdb];
/// `xchg cx, cx`: snapshot them at its end.
pub const STOP_MARK: [u8; 3] = [0x66, 0x87, 0xc9];

// The plugin API, resolved against the QEMU binary that loads us.
unsafe extern "C" {
    fn qemu_plugin_register_vcpu_tb_trans_cb(id: PluginId, cb: TbTransCb);
    fn qemu_plugin_tb_n_insns(tb: *const c_void) -> usize;
    fn qemu_plugin_tb_get_insn(tb: *const c_void, idx: usize) -> *mut c_void;
    fn qemu_plugin_insn_data(insn: *const c_void) -> *const u8;
    fn qemu_plugin_insn_size(insn: *const c_void) -> usize;
    fn qemu_plugin_register_vcpu_tb_exec_cb(tb: *mut c_void, cb: VcpuUdataCb, flags: c_int, userdata: *mut c_void);
    fn qemu_plugin_register_vcpu_insn_exec_cb(insn: *mut c_void, cb: VcpuUdataCb, flags: c_int, userdata: *mut c_void);
    fn qemu_plugin_register_atexit_cb(id: PluginId, cb: AtExitCb, userdata: *mut c_void);
}

/// The API version this plugin was written against; QEMU refuses versions it does not know.
#[unsafe(no_mangle)]
pub static qemu_plugin_version: c_int = 1;

type Counts = [u64; MAX_VCPUS];

/// Instructions executed, per vCPU index, and the snapshots the marks took. Only QEMU's one TCG
/// thread touches them (see the module comment).
static mut INSNS: Counts = [0; MAX_VCPUS];
static mut AT_START: Option<Counts> = None;
static mut AT_STOP: Option<Counts> = None;
static mut MARKS: [u64; 2] = [0; 2];
/// The highest vCPU index seen, plus one.
static mut VCPUS: usize = 0;
static OUT: OnceLock<String> = OnceLock::new();

extern "C" fn on_exec(vcpu: u32, insns: *mut c_void) {
    let i = (vcpu as usize).min(MAX_VCPUS - 1);
    // SAFETY: one TCG thread runs every vCPU, so nothing races.
    unsafe {
        INSNS[i] += insns.addr() as u64;
        VCPUS = VCPUS.max(i + 1);
    }
}

extern "C" fn on_start_mark(_vcpu: u32, _: *mut c_void) {
    // SAFETY: as in `on_exec`.
    unsafe {
        AT_START = Some(INSNS);
        MARKS[0] += 1;
    }
}

extern "C" fn on_stop_mark(_vcpu: u32, _: *mut c_void) {
    // SAFETY: as in `on_exec`.
    unsafe {
        AT_STOP = Some(INSNS);
        MARKS[1] += 1;
    }
}

extern "C" fn on_translate(_id: PluginId, tb: *mut c_void) {
    // SAFETY: `tb` and its instructions are valid for this callback. The block's instruction
    // count travels as the callback's user data, not as a pointer to anything.
    unsafe {
        let n = qemu_plugin_tb_n_insns(tb);
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_exec, CB_NO_REGS, std::ptr::without_provenance_mut(n));
        for i in 0..n {
            let insn = qemu_plugin_tb_get_insn(tb, i);
            if qemu_plugin_insn_size(insn) != START_MARK.len() {
                continue;
            }
            let bytes = std::slice::from_raw_parts(qemu_plugin_insn_data(insn), START_MARK.len());
            let cb: VcpuUdataCb = match bytes {
                b if b == START_MARK => on_start_mark,
                b if b == STOP_MARK => on_stop_mark,
                _ => continue,
            };
            qemu_plugin_register_vcpu_insn_exec_cb(insn, cb, CB_NO_REGS, std::ptr::null_mut());
        }
    }
}

fn line(counts: &[u64]) -> String {
    counts.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
}

extern "C" fn on_exit(_id: PluginId, _: *mut c_void) {
    // SAFETY: at exit no vCPU runs any more.
    let (all, start, stop, marks, vcpus) = unsafe { (INSNS, AT_START, AT_STOP, MARKS, VCPUS) };
    let mut text = format!("{}\nvcpu {}\nmarks {}\n", all[..vcpus].iter().sum::<u64>(), line(&all[..vcpus]), line(&marks));
    if let (Some(a), Some(b)) = (start, stop) {
        let window: Vec<u64> = (0..vcpus).map(|i| b[i].saturating_sub(a[i])).collect();
        text.push_str(&format!("window {}\n", line(&window)));
    }
    if let Some(path) = OUT.get() {
        let _ = std::fs::write(path, text);
    }
}

/// Called by QEMU when it loads the plugin; `argv` holds the `key=value` options.
///
/// # Safety
/// QEMU passes `argc` valid C strings in `argv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qemu_plugin_install(id: PluginId, _info: *const c_void, argc: c_int, argv: *const *const c_char) -> c_int {
    for i in 0..argc as usize {
        // SAFETY: QEMU's contract above.
        let arg = unsafe { CStr::from_ptr(*argv.add(i)) }.to_string_lossy();
        if let Some(path) = arg.strip_prefix("out=") {
            let _ = OUT.set(path.to_string());
        }
    }
    if OUT.get().is_none() {
        eprintln!("lb-tcg-insns: missing option out=PATH");
        return -1;
    }
    // SAFETY: registering our callbacks with the id QEMU gave us.
    unsafe {
        qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
        qemu_plugin_register_atexit_cb(id, on_exit, std::ptr::null_mut());
    }
    0
}
