//! Large records buffers kept on each thread between write bursts.
//!
//! A client connection frees its records buffer when a burst of writes ends, so that idle
//! connections hold none. The next burst, on this connection or another one of the same
//! thread, takes a spare buffer back, already initialised, instead of allocating and zeroing
//! about 256 KiB again (zeroing alone was 3 % of lbd's CPU in `bulk-1m-c64`). What is kept is
//! bounded per thread, like an allocator's cache.

use std::cell::RefCell;

/// Buffers at least this long are worth keeping (and taken for growth to at least this).
pub const MIN_KEPT: usize = 64 * 1024;
/// The most bytes kept per thread.
const MAX_KEPT: usize = 4 << 20;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of at least `len` initialised bytes: a spare one if this thread has one that long.
pub fn take(len: usize) -> Vec<u8> {
    let spare = SPARE.with_borrow_mut(|spare| {
        let i = spare.iter().position(|b| b.len() >= len)?;
        Some(spare.swap_remove(i))
    });
    spare.unwrap_or_else(|| vec![0; len])
}

/// Gives back a buffer no longer needed: kept if it is long and the thread has room for it.
pub fn give(buf: Vec<u8>) {
    if buf.len() < MIN_KEPT {
        return;
    }
    SPARE.with_borrow_mut(|spare| {
        if spare.iter().map(Vec::len).sum::<usize>() + buf.len() <= MAX_KEPT {
            spare.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_back_buffer_is_taken_again_with_its_contents_initialised_and_the_cache_is_bounded() {
        let mut buf = take(MIN_KEPT);
        assert_eq!(buf.len(), MIN_KEPT);
        buf[0] = 7;
        let at = buf.as_ptr();
        give(buf);
        // Longer than any spare: a new one.
        assert_eq!(take(2 * MIN_KEPT).len(), 2 * MIN_KEPT);
        let again = take(MIN_KEPT / 2);
        assert_eq!((again.as_ptr(), again.len(), again[0]), (at, MIN_KEPT, 7));
        // Short buffers are not kept; at most MAX_KEPT bytes are.
        give(vec![0; MIN_KEPT - 1]);
        for _ in 0..2 * MAX_KEPT / MIN_KEPT {
            give(vec![0; MIN_KEPT]);
        }
        let kept = SPARE.with_borrow(|spare| (spare.len(), spare.iter().map(Vec::len).sum::<usize>()));
        assert_eq!(kept, (MAX_KEPT / MIN_KEPT, MAX_KEPT));
    }
}
