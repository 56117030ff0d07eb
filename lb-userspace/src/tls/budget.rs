//! The confidentiality limit of an offloaded connection's keys. An AEAD key may encrypt only so
//! many records (AES-128-GCM 2^24, AES-256-GCM 2^23 in rustls' suites; ChaCha20-Poly1305 has no
//! practical limit). While rustls holds the keys it counts records and renews them (TLS 1.3) or
//! closes (TLS 1.2) in time; once the kernel encrypts, rustls no longer sees the records and its
//! `kernel` module leaves the count to the caller. Where the key can be renewed (a TLS 1.3
//! connection on a kernel that takes new keys, Linux 6.14 and later) the budget renews it with a
//! key update when it runs out ([`super::rekey`]); elsewhere (older kernels, TLS 1.2) lbd ends
//! the connection cleanly (close_notify, then FIN) before the limit.
//!
//! The count is kept here, without asking the kernel (which would hand the keys back to read the
//! sequence number): a send of `n` bytes makes at most `n / 16384` full records and one short
//! one, so the budget runs out at the limit at the latest, earlier when sends are short.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::rekey::KeyUpdates;
use super::stream::KtlsClosed;

/// The largest TLS record payload; the kernel fills records up to it.
const MAX_RECORD: usize = 16 * 1024;
/// Records kept back for the close_notify (and any alert) that ends the connection.
const RESERVE: u64 = 8;

/// How many more records may be sent under an offloaded connection's transmit key. Written by
/// one task at a time (the connection's, or one splice direction); atomic only so that it can be
/// borrowed across the awaits of a `Send` future.
#[derive(Debug)]
pub struct RecordBudget {
    left: AtomicU64,
    /// What `left` started at.
    initial: u64,
    /// What `left` starts at under a renewed key.
    renewed: u64,
    /// Fired once when the budget becomes [`Self::nearly_spent`].
    nearly_spent: tokio::sync::Notify,
    /// The key schedule, where the kernel takes new keys: the budget is then renewed, never
    /// spent.
    keys: Option<KeyUpdates>,
    /// The peer's KeyUpdate asked for one in return: the next send is preceded by it.
    update_requested: AtomicBool,
}

impl RecordBudget {
    /// A budget of `limit` records (the suite's confidentiality limit, or the operator's lower
    /// `--ktls-record-limit`), of which the key already encrypted `used` in rustls; `keys` where
    /// the key can be renewed.
    pub fn new(limit: u64, used: u64, keys: Option<KeyUpdates>) -> Self {
        let renewed = limit.saturating_sub(RESERVE);
        let initial = renewed.saturating_sub(used);
        RecordBudget {
            left: AtomicU64::new(initial),
            initial,
            renewed,
            nearly_spent: tokio::sync::Notify::new(),
            keys,
            update_requested: AtomicBool::new(false),
        }
    }

    /// Less than an eighth left of a key that cannot be renewed: a connection is wound down (a
    /// pooled one retired, an HTTP/1.1 one closed after its response, an h2 one sent GOAWAY)
    /// rather than run into the limit.
    pub fn nearly_spent(&self) -> bool {
        self.keys.is_none() && self.left.load(Ordering::Relaxed) < self.initial / 8
    }

    /// Before a send of `len` bytes on `fd`: renews the transmit key first where it is due (spent,
    /// or asked for by the peer) and can be, then says how many of the bytes may be sent, as
    /// [`Self::allowed`]. `WouldBlock` when the KeyUpdate could not be sent yet.
    pub fn before_send(&self, fd: RawFd, len: usize) -> io::Result<usize> {
        if let Some(keys) = &self.keys
            && len > 0
            && (self.left.load(Ordering::Relaxed) == 0 || self.update_requested.load(Ordering::Relaxed))
        {
            keys.renew_tx(fd)?;
            self.update_requested.store(false, Ordering::Relaxed);
            self.left.store(self.renewed, Ordering::Relaxed);
        }
        self.allowed(len)
    }

    /// After the peer's KeyUpdate was read from `fd`: installs the next receive key, and, if the
    /// peer asked, has the next send renew the transmit key. Where keys cannot be renewed the
    /// connection ends (`KtlsClosed::KeyUpdate`): records after the KeyUpdate use a key the
    /// kernel cannot be given.
    pub fn follow_key_update(&self, fd: RawFd, requested: bool) -> io::Result<()> {
        let Some(keys) = &self.keys else {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, KtlsClosed::KeyUpdate));
        };
        keys.renew_rx(fd)?;
        if requested {
            self.update_requested.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Completes once the budget is [`Self::nearly_spent`] (at once if it already is).
    pub async fn wait_nearly_spent(&self) {
        if !self.nearly_spent() {
            self.nearly_spent.notified().await;
        }
    }

    /// The most records a send of `len` bytes can make.
    fn cost(len: usize) -> u64 {
        if len == 0 { 0 } else { (len / MAX_RECORD) as u64 + 1 }
    }

    /// Before a send of `len` bytes: how many of them (from the start) may be sent without
    /// taking the key past its limit, or an error (`KtlsClosed::RecordLimit`) when none may.
    fn allowed(&self, len: usize) -> io::Result<usize> {
        let left = self.left.load(Ordering::Relaxed);
        if len == 0 {
            return Ok(0);
        }
        if left == 0 {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, KtlsClosed::RecordLimit));
        }
        // cost(n) <= left exactly when n < left * MAX_RECORD.
        let most = usize::try_from(left).unwrap_or(usize::MAX).saturating_mul(MAX_RECORD).saturating_sub(1);
        Ok(len.min(most))
    }

    /// After a send that moved `sent` bytes (no more than [`Self::allowed`] said).
    pub fn spend(&self, sent: usize) {
        let left = self.left.load(Ordering::Relaxed);
        let now = left.saturating_sub(Self::cost(sent));
        self.left.store(now, Ordering::Relaxed);
        let threshold = self.initial / 8;
        if self.keys.is_none() && left >= threshold && now < threshold {
            // A permit is stored if nobody waits yet.
            self.nearly_spent.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_are_cut_to_what_the_limit_allows_then_refused() {
        let b = RecordBudget::new(RESERVE + 10, 0, None);
        assert_eq!(b.allowed(0).unwrap(), 0);
        // 3 full records and a short one: 4.
        assert_eq!(b.allowed(3 * MAX_RECORD + 1).unwrap(), 3 * MAX_RECORD + 1);
        b.spend(3 * MAX_RECORD + 1);
        // 6 left: 5 full records and a short one at most.
        assert_eq!(b.allowed(5 * MAX_RECORD).unwrap(), 5 * MAX_RECORD);
        assert_eq!(b.allowed(10 * MAX_RECORD).unwrap(), 6 * MAX_RECORD - 1);
        assert!(!b.nearly_spent());
        for _ in 0..6 {
            assert_eq!(b.allowed(100).unwrap(), 100);
            b.spend(100);
        }
        let e = b.allowed(1).unwrap_err();
        assert!(matches!(e.get_ref().and_then(|i| i.downcast_ref::<KtlsClosed>()), Some(KtlsClosed::RecordLimit)), "each short send counts as a record: {e}");
        assert_eq!(b.allowed(0).unwrap(), 0);
        assert!(b.nearly_spent());
        assert!(!RecordBudget::new(1 << 24, 0, None).nearly_spent());
    }

    #[tokio::test]
    async fn crossing_into_nearly_spent_wakes_the_waiter() {
        let b = std::sync::Arc::new(RecordBudget::new(RESERVE + 80, 0, None));
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.wait_nearly_spent().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        // 80 records, an eighth is 10: the 71st short send leaves 9.
        for _ in 0..70 {
            b.spend(1);
        }
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished() && !b.nearly_spent());
        b.spend(1);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.expect("woken").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), b.wait_nearly_spent()).await.expect("already spent: at once");
    }
}
