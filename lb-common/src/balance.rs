//! Member selection shared by the userspace proxy and (later) the XDP tables.

/// A smooth weighted round-robin schedule (the nginx algorithm): a precomputed sequence of member
/// indices in which each member appears `weight` times, interleaved as evenly as possible.
///
/// Walking the schedule with an atomic cursor gives lock-free weighted round robin. Members with
/// weight 0 (drained) never appear. An empty schedule means no member can take traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    order: Vec<usize>,
}

impl Schedule {
    /// Builds the schedule for `weights[i]` = weight of member `i`.
    pub fn smooth_weighted(weights: &[u32]) -> Self {
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        let mut current = vec![0i64; weights.len()];
        let mut order = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best: Option<usize> = None;
            for (i, &w) in weights.iter().enumerate() {
                if w == 0 {
                    continue;
                }
                current[i] += i64::from(w);
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let Some(b) = best else { break };
            current[b] -= total;
            order.push(b);
        }
        Schedule { order }
    }

    /// Member index at position `cursor` (wrapping), or `None` when no member has weight.
    pub fn pick(&self, cursor: usize) -> Option<usize> {
        if self.order.is_empty() {
            None
        } else {
            Some(self.order[cursor % self.order.len()])
        }
    }

    /// Length of one full cycle.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when no member can take traffic.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Distinct members in the order a request should try them, starting at `cursor`: the
    /// scheduled member first, then the others, so a refused connection is retried elsewhere.
    pub fn candidates(&self, cursor: usize, members: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let Some(first) = self.pick(cursor) else { return out };
        out.push(first);
        for step in 1..self.order.len() {
            let m = self.order[(cursor + step) % self.order.len()];
            if !out.contains(&m) {
                out.push(m);
                if out.len() == members {
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_respected_over_a_cycle() {
        let s = Schedule::smooth_weighted(&[5, 1, 1]);
        assert_eq!(s.len(), 7);
        let count = |m| (0..7).filter(|&c| s.pick(c) == Some(m)).count();
        assert_eq!((count(0), count(1), count(2)), (5, 1, 1));
        // smooth: the heavy member is not picked five times in a row
        assert_eq!(s.order, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn drained_members_never_picked() {
        let s = Schedule::smooth_weighted(&[0, 2, 0]);
        assert!((0..10).all(|c| s.pick(c) == Some(1)));
        assert!(Schedule::smooth_weighted(&[0, 0]).pick(0).is_none());
        assert!(Schedule::smooth_weighted(&[]).is_empty());
    }

    #[test]
    fn candidates_list_each_member_once_starting_with_the_scheduled_one() {
        let s = Schedule::smooth_weighted(&[1, 1, 1]);
        let c = s.candidates(1, 3);
        assert_eq!(c.len(), 3);
        assert_eq!(c[0], s.pick(1).unwrap());
        let mut sorted = c.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2]);
    }
}
