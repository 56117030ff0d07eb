//! A QEMU TCG plugin (QEMU's plugin API, version 1 as in QEMU 7.2) that counts every guest
//! instruction executed, user and kernel, and writes the total to a file when QEMU exits.
//!
//! At translation time each translation block gets an inline "add the block's instruction
//! count" operation, so counting costs no callback per execution. Counts are exact only when
//! vCPUs share one TCG thread (`-accel tcg,thread=single`, which `cargo xtask bench` passes):
//! with one thread per vCPU the inline adds to the one counter would race.
//!
//! Load: `-plugin path/liblb_tcg_insns.so,out=/path/to/count`.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

type PluginId = u64;
type TbTransCb = extern "C" fn(PluginId, *mut c_void);
type AtExitCb = extern "C" fn(PluginId, *mut c_void);

/// `QEMU_PLUGIN_INLINE_ADD_U64`.
const INLINE_ADD_U64: c_int = 0;

// The plugin API, resolved against the QEMU binary that loads us.
unsafe extern "C" {
    fn qemu_plugin_register_vcpu_tb_trans_cb(id: PluginId, cb: TbTransCb);
    fn qemu_plugin_tb_n_insns(tb: *const c_void) -> usize;
    fn qemu_plugin_register_vcpu_tb_exec_inline(tb: *mut c_void, op: c_int, ptr: *mut c_void, imm: u64);
    fn qemu_plugin_register_atexit_cb(id: PluginId, cb: AtExitCb, userdata: *mut c_void);
}

/// The API version this plugin was written against; QEMU refuses versions it does not know.
#[unsafe(no_mangle)]
pub static qemu_plugin_version: c_int = 1;

/// The counter the inline operations add to. Only QEMU's TCG thread writes it.
static mut INSNS: u64 = 0;
static OUT: OnceLock<String> = OnceLock::new();

extern "C" fn on_translate(_id: PluginId, tb: *mut c_void) {
    // SAFETY: `tb` is the block QEMU is translating, valid for this callback; the counter is a
    // static that outlives QEMU's use of it.
    unsafe {
        let n = qemu_plugin_tb_n_insns(tb) as u64;
        qemu_plugin_register_vcpu_tb_exec_inline(tb, INLINE_ADD_U64, (&raw mut INSNS).cast(), n);
    }
}

extern "C" fn on_exit(_id: PluginId, _: *mut c_void) {
    // SAFETY: at exit no vCPU runs any more.
    let total = unsafe { INSNS };
    if let Some(path) = OUT.get() {
        let _ = std::fs::write(path, format!("{total}\n"));
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
