//! Types shared by `lbd` (userspace) and the XDP program.
//!
//! - [`xdp`]: `#[repr(C)]` map keys and values; `no_std`, used by `lb-ebpf`.
//! - [`csum`]: the incremental checksum updates of `lb-ebpf`'s rewrites; `no_std`.
//! - [`model`]: the desired-state snapshot the control plane produces and the reconciler applies.
//! - [`cidr`]: `allowed_cidrs` networks.
//! - [`balance`]: member-selection algorithms shared by every data path.
//! - [`maglev`]: the weighted Maglev table the XDP path looks new flows up in.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod csum;
pub mod xdp;

#[cfg(feature = "std")]
pub mod balance;
#[cfg(feature = "std")]
pub mod cidr;
#[cfg(feature = "std")]
pub mod maglev;
#[cfg(feature = "std")]
pub mod model;
