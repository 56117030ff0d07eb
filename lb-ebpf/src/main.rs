//! lb's XDP program. For now it counts every packet and byte per CPU and passes it on; the
//! Maglev L4 data path replaces this body in the XDP issue.
#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::PerCpuArray;
use aya_ebpf::programs::XdpContext;
use lb_common::xdp::{COUNTER_SLOTS, Counter};

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    add(Counter::Packets, 1);
    add(Counter::Bytes, len);
    add(Counter::Passed, 1);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn add(counter: Counter, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += n };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
