//! Layouts of the maps shared with the XDP program. Plain `#[repr(C)]` data, no padding surprises.

/// Index of each counter in the `COUNTERS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every packet the program saw.
    Packets = 0,
    /// Bytes of those packets (L2 frame length).
    Bytes = 1,
    /// Packets passed to the kernel stack.
    Passed = 2,
}

/// Number of slots in the `COUNTERS` array.
pub const COUNTER_SLOTS: u32 = 3;
