//! Which member a new request (HTTP) or connection (raw) goes to: the pool's session persistence
//! first, then its `lb_algorithm` over the members taking traffic ([`Pool::serving_weights`]:
//! backups only while no other member can), then every other such member for retries.
//!
//! - `ROUND_ROBIN`: smooth weighted round robin.
//! - `LEAST_CONNECTIONS`: the fewest requests (or raw connections) in flight per unit of weight,
//!   counted across all workers.
//! - `SOURCE_IP`, `SOURCE_IP_PORT`: a weighted Maglev table looked up with the client's address
//!   (and port), so a member change moves few clients.
//!
//! Persistence keeps what it learned in a [`StickTable`] that survives reconciles: the client
//! address (`SOURCE_IP`), or the value of the member's own cookie (`APP_COOKIE`). `HTTP_COOKIE`
//! needs no table: the cookie lbd sets names the member.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lb_common::balance::Schedule;
use lb_common::maglev::{self, Table};
use lb_common::model::{LbAlgorithm, Persistence, Pool};

/// The cookie lbd sets for `HTTP_COOKIE` persistence (the name Octavia's amphorae use).
pub const SERVER_COOKIE: &str = "SRV";

/// Entries a stick table keeps (Octavia's `stick-table ... size 10k`); the least recently used
/// go first when it is full.
const STICK_ENTRIES: usize = 10_000;

/// What the choice may depend on besides the pool.
#[derive(Clone, Copy, Debug)]
pub struct Affinity<'a> {
    pub peer: SocketAddr,
    /// The value of the pool's persistence cookie in the request ([`Chooser::cookie_name`]).
    pub cookie: Option<&'a str>,
}

/// Remembered client → member assignments, bounded, shared by all workers.
pub struct StickTable<K> {
    entries: Mutex<HashMap<K, (Arc<str>, Instant)>>,
    /// Forgotten after this long unused; `None`: only when the table is full.
    timeout: Option<Duration>,
}

impl<K: Hash + Eq + Clone> StickTable<K> {
    pub fn new(timeout: Option<Duration>) -> Self {
        StickTable { entries: Mutex::new(HashMap::new()), timeout }
    }

    /// The member id `key` was last sent to, refreshed, unless it expired.
    fn get(&self, key: &K) -> Option<Arc<str>> {
        let mut entries = self.entries.lock().expect("stick table lock");
        let now = Instant::now();
        let (member, used) = entries.get_mut(key)?;
        if self.timeout.is_some_and(|t| now.duration_since(*used) > t) {
            entries.remove(key);
            return None;
        }
        *used = now;
        Some(member.clone())
    }

    /// Sends `key` to `member` from now on.
    pub fn put(&self, key: K, member: &Arc<str>) {
        let mut entries = self.entries.lock().expect("stick table lock");
        let now = Instant::now();
        if entries.len() >= STICK_ENTRIES && !entries.contains_key(&key) {
            if let Some(t) = self.timeout {
                entries.retain(|_, (_, used)| now.duration_since(*used) <= t);
            }
            if entries.len() >= STICK_ENTRIES {
                // Drop the least recently used eighth in one go, so a full table is not
                // scanned on every insert.
                let mut ages: Vec<Instant> = entries.values().map(|(_, used)| *used).collect();
                let cut = STICK_ENTRIES / 8;
                ages.select_nth_unstable(cut);
                let oldest = ages[cut];
                entries.retain(|_, (_, used)| *used > oldest);
            }
        }
        entries.insert(key, (member.clone(), now));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().expect("stick table lock").len()
    }
}

/// A pool's persistence as the data path applies it.
pub enum Sticky {
    Source(Arc<StickTable<IpAddr>>),
    ServerCookie,
    AppCookie { name: Box<str>, table: Arc<StickTable<Box<str>>> },
}

impl Sticky {
    fn new(p: &Persistence, previous: Option<&Chooser>) -> Sticky {
        let old = previous.and_then(|c| c.sticky.as_ref());
        match p {
            Persistence::SourceIp { timeout, .. } => Sticky::Source(match old {
                Some(Sticky::Source(t)) if t.timeout == Some(*timeout) => t.clone(),
                _ => Arc::new(StickTable::new(Some(*timeout))),
            }),
            Persistence::HttpCookie => Sticky::ServerCookie,
            Persistence::AppCookie { name } => Sticky::AppCookie {
                name: name.as_str().into(),
                table: match old {
                    Some(Sticky::AppCookie { name: n, table }) if **n == **name => table.clone(),
                    _ => Arc::new(StickTable::new(None)),
                },
            },
        }
    }
}

/// Member choice for one pool (indices into the pool's member list).
pub struct Chooser {
    algorithm: LbAlgorithm,
    /// Serving weight per member.
    weights: Vec<u32>,
    /// Round-robin order over the serving members, also the retry order.
    schedule: Schedule,
    cursor: AtomicUsize,
    /// `SOURCE_IP`, `SOURCE_IP_PORT`: slot → member index.
    ring: Option<Table>,
    sticky: Option<Sticky>,
    /// Member id → index, for persistence.
    ids: HashMap<Arc<str>, usize>,
}

impl Chooser {
    /// The choice for `pool`, keeping the round-robin position and the stick tables of
    /// `previous`.
    pub fn new(pool: &Pool, ids: &[Arc<str>], previous: Option<&Chooser>) -> Result<Chooser, String> {
        let weights = pool.serving_weights();
        let ring = match pool.lb_algorithm {
            LbAlgorithm::SourceIp | LbAlgorithm::SourceIpPort => {
                let keyed: Vec<(Vec<u8>, u32)> = pool.members.iter().zip(&weights).map(|(m, w)| (SocketAddr::new(m.address, m.protocol_port).to_string().into_bytes(), *w)).collect();
                Some(Table::build(&keyed, maglev::DEFAULT_TABLE_SIZE).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        let sticky = pool.persistence.as_ref().map(|p| Sticky::new(p, previous));
        Ok(Chooser {
            algorithm: pool.lb_algorithm,
            schedule: Schedule::smooth_weighted(&weights),
            weights,
            cursor: AtomicUsize::new(previous.map(|p| p.cursor.load(Ordering::Relaxed)).unwrap_or(0)),
            ring,
            ids: if sticky.is_some() { ids.iter().enumerate().map(|(i, id)| (id.clone(), i)).collect() } else { HashMap::new() },
            sticky,
        })
    }

    /// Whether requests are counted in flight per member (`LEAST_CONNECTIONS`).
    pub fn counts_in_flight(&self) -> bool {
        self.algorithm == LbAlgorithm::LeastConnections
    }

    /// The request cookie whose value [`Affinity::cookie`] must carry, if any.
    pub fn cookie_name(&self) -> Option<&str> {
        match &self.sticky {
            Some(Sticky::ServerCookie) => Some(SERVER_COOKIE),
            Some(Sticky::AppCookie { name, .. }) => Some(name),
            _ => None,
        }
    }

    pub fn sticky(&self) -> Option<&Sticky> {
        self.sticky.as_ref()
    }

    /// Members to try, best first, each once; empty when none takes traffic. `in_flight(i)` is
    /// member `i`'s count (read only for `LEAST_CONNECTIONS`).
    pub fn order(&self, a: &Affinity<'_>, in_flight: impl Fn(usize) -> usize) -> Vec<usize> {
        let cursor = self.cursor.fetch_add(1, Ordering::Relaxed);
        let mut out = self.schedule.candidates(cursor, self.weights.len());
        let Some(&scheduled) = out.first() else { return out };
        let first = self.remembered(a).filter(|&i| self.weights[i] > 0).unwrap_or_else(|| match self.algorithm {
            LbAlgorithm::RoundRobin => scheduled,
            LbAlgorithm::LeastConnections => self.least_loaded(cursor, in_flight),
            LbAlgorithm::SourceIp | LbAlgorithm::SourceIpPort => {
                let ring = self.ring.as_ref().expect("built for hashing algorithms");
                let port = if self.algorithm == LbAlgorithm::SourceIpPort { Some(a.peer.port()) } else { None };
                match ring.lookup(source_hash(a.peer.ip(), port)) {
                    maglev::NO_MEMBER => scheduled,
                    i => i as usize,
                }
            }
        });
        match out.iter().position(|&i| i == first) {
            Some(0) => {}
            // The chosen member first, the others in retry order after it.
            Some(pos) => out[..=pos].rotate_right(1),
            None => out.insert(0, first),
        }
        out
    }

    /// The member persistence sends this client to, if it knows one.
    fn remembered(&self, a: &Affinity<'_>) -> Option<usize> {
        let id = match self.sticky.as_ref()? {
            Sticky::Source(table) => table.get(&a.peer.ip().to_canonical())?,
            Sticky::ServerCookie => return self.ids.get(a.cookie?).copied(),
            Sticky::AppCookie { table, .. } => table.get(&Box::from(a.cookie?))?,
        };
        self.ids.get(&id).copied()
    }

    /// The serving member with the fewest in flight per unit of weight; ties go round the
    /// members from `cursor`.
    fn least_loaded(&self, cursor: usize, in_flight: impl Fn(usize) -> usize) -> usize {
        let n = self.weights.len();
        let mut best: Option<(usize, u64, u64)> = None;
        for k in 0..n {
            let i = (cursor + k) % n;
            let w = u64::from(self.weights[i]);
            if w == 0 {
                continue;
            }
            let load = in_flight(i) as u64;
            // load / w < best_load / best_w, without division.
            if best.is_none_or(|(_, bl, bw)| load * bw < bl * w) {
                best = Some((i, load, w));
            }
        }
        best.map(|(i, _, _)| i).expect("called with a serving member")
    }

    /// Records where a client with a source-address table was sent.
    pub fn learn_source(&self, peer: SocketAddr, member: &Arc<str>) {
        if let Some(Sticky::Source(table)) = &self.sticky {
            table.put(peer.ip().to_canonical(), member);
        }
    }
}

/// The hash `SOURCE_IP` (`port` `None`) and `SOURCE_IP_PORT` look the Maglev table up with.
fn source_hash(ip: IpAddr, port: Option<u16>) -> u64 {
    let mut key = match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    if let Some(p) = port {
        key.extend_from_slice(&p.to_be_bytes());
    }
    maglev::fnv1a(0x5eed_c11e, &key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::model::{Member, PoolProtocol};

    fn pool(algorithm: LbAlgorithm, weights: &[(u32, bool)], persistence: Option<Persistence>) -> (Pool, Vec<Arc<str>>) {
        let members: Vec<Member> = weights
            .iter()
            .enumerate()
            .map(|(i, (w, backup))| Member {
                id: format!("m{i}"),
                address: "10.0.0.1".parse().unwrap(),
                protocol_port: 8000 + i as u16,
                weight: *w,
                admin_state_up: true,
                monitor_address: None,
                monitor_port: None,
                healthy: true,
                backup: *backup,
            })
            .collect();
        let ids = members.iter().map(|m| Arc::from(m.id.as_str())).collect();
        let pool = Pool { id: "p".into(), protocol: PoolProtocol::Http, lb_algorithm: algorithm, admin_state_up: true, members, tls: None, health_monitor: None, persistence };
        (pool, ids)
    }

    fn client(ip: &str, port: u16) -> Affinity<'static> {
        Affinity { peer: SocketAddr::new(ip.parse().unwrap(), port), cookie: None }
    }

    #[test]
    fn backups_serve_only_while_no_other_member_can() {
        let (mut p, ids) = pool(LbAlgorithm::RoundRobin, &[(1, false), (1, false), (5, true)], None);
        let c = Chooser::new(&p, &ids, None).unwrap();
        let firsts: Vec<usize> = (0..6).map(|_| c.order(&client("192.0.2.1", 1), |_| 0)[0]).collect();
        assert!(firsts.iter().all(|&i| i < 2), "{firsts:?}");
        assert_eq!(c.order(&client("192.0.2.1", 1), |_| 0).len(), 2, "the backup is not even a retry");
        p.members[0].healthy = false;
        p.members[1].admin_state_up = false;
        let c = Chooser::new(&p, &ids, None).unwrap();
        assert_eq!(c.order(&client("192.0.2.1", 1), |_| 0), vec![2]);
    }

    #[test]
    fn least_connections_weighs_in_flight_counts() {
        let (p, ids) = pool(LbAlgorithm::LeastConnections, &[(1, false), (2, false), (1, false)], None);
        let c = Chooser::new(&p, &ids, None).unwrap();
        let load = [3, 4, 5];
        // 3/1, 4/2, 5/1: member 1 has the least per unit of weight.
        assert_eq!(c.order(&client("192.0.2.1", 1), |i| load[i])[0], 1);
        let idle = [0, 0, 0];
        let mut firsts: Vec<usize> = (0..3).map(|_| c.order(&client("192.0.2.1", 1), |i| idle[i])[0]).collect();
        firsts.sort();
        assert_eq!(firsts, vec![0, 1, 2], "ties rotate");
    }

    #[test]
    fn source_ip_keeps_a_client_on_one_member_and_source_ip_port_spreads_its_connections() {
        let (p, ids) = pool(LbAlgorithm::SourceIp, &[(1, false), (1, false), (1, false)], None);
        let c = Chooser::new(&p, &ids, None).unwrap();
        for ip in ["192.0.2.1", "192.0.2.2", "2001:db8::7"] {
            let first = c.order(&client(ip, 1000), |_| 0)[0];
            assert!((1001..1100).all(|port| c.order(&client(ip, port), |_| 0)[0] == first));
        }
        let spread: std::collections::HashSet<usize> = (1..60).map(|i| c.order(&client(&format!("192.0.2.{i}"), 1), |_| 0)[0]).collect();
        assert_eq!(spread.len(), 3, "clients spread over all members");
        let (p, ids) = pool(LbAlgorithm::SourceIpPort, &[(1, false), (1, false), (1, false)], None);
        let c = Chooser::new(&p, &ids, None).unwrap();
        let spread: std::collections::HashSet<usize> = (1000..1060).map(|port| c.order(&client("192.0.2.1", port), |_| 0)[0]).collect();
        assert_eq!(spread.len(), 3, "one client's connections spread");
    }

    #[test]
    fn persistence_overrides_the_algorithm_until_the_member_stops_serving() {
        let (mut p, ids) = pool(LbAlgorithm::RoundRobin, &[(1, false), (1, false)], Some(Persistence::SourceIp { timeout: Duration::from_secs(60), ipv4_prefix: 32 }));
        let c = Chooser::new(&p, &ids, None).unwrap();
        c.learn_source(client("192.0.2.9", 1).peer, &ids[1]);
        assert!((0..5).all(|port| c.order(&client("::ffff:192.0.2.9", port), |_| 0)[0] == 1), "mapped v4 is the same client");
        // Rebuilt with the member drained: the table survives but the member is skipped.
        p.members[1].weight = 0;
        let c2 = Chooser::new(&p, &ids, Some(&c)).unwrap();
        assert_eq!(c2.order(&client("192.0.2.9", 1), |_| 0), vec![0]);
        p.members[1].weight = 1;
        let c3 = Chooser::new(&p, &ids, Some(&c2)).unwrap();
        assert_eq!(c3.order(&client("192.0.2.9", 1), |_| 0)[0], 1, "remembered across reconciles");

        let (p, ids) = pool(LbAlgorithm::RoundRobin, &[(1, false), (1, false)], Some(Persistence::HttpCookie));
        let c = Chooser::new(&p, &ids, None).unwrap();
        assert_eq!(c.cookie_name(), Some(SERVER_COOKIE));
        assert!((0..4).all(|_| c.order(&Affinity { cookie: Some("m1"), ..client("192.0.2.1", 1) }, |_| 0)[0] == 1));
        let unknown: std::collections::HashSet<usize> = (0..4).map(|_| c.order(&Affinity { cookie: Some("gone"), ..client("192.0.2.1", 1) }, |_| 0)[0]).collect();
        assert_eq!(unknown.len(), 2, "an unknown member id falls back to the algorithm");
    }

    #[test]
    fn a_full_stick_table_drops_its_least_recently_used_entries() {
        let t: StickTable<u32> = StickTable::new(None);
        let m: Arc<str> = Arc::from("m");
        for k in 0..STICK_ENTRIES as u32 {
            t.put(k, &m);
        }
        assert!(t.get(&0).is_some(), "refreshes key 0");
        t.put(u32::MAX, &m);
        assert!(t.len() <= STICK_ENTRIES - STICK_ENTRIES / 8 + 1, "{}", t.len());
        assert!(t.get(&0).is_some() && t.get(&u32::MAX).is_some() && t.get(&1).is_none());
    }
}
