//! Production-shaped traffic: who sends requests, and when their outcomes come back.
//!
//! Real canaries are not a coin flipped per request at exactly the configured share. Users
//! are sticky (bucketed once per release, so a heavy user moves a whole slice of volume to one
//! arm), volumes are heavy-tailed, some tenants are excluded from the release, and outcomes
//! arrive late and in batches, so outcomes routed under one step are often ingested after
//! the next step began. [`Population`] and [`Pipe`] model those; the release simulator and
//! `serin bench judge` share them, so both see the same traffic for the same seed.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use rand::Rng;
use serde::Serialize;

use super::{SimRng, sim_rng};

/// The shape of an agent's traffic.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Traffic {
    pub users: u32,
    /// Pareto shape of per-user request volumes: 1.16 is the 80/20 rule, larger is milder;
    /// `f64::INFINITY` gives every user the same volume.
    pub volume_shape: f64,
    pub tenants: u32,
    /// Tenants `0 .. excluded_tenants` stay on the stable bundle until the final step.
    pub excluded_tenants: u32,
    /// Mean requests (of the same agent) between a request and its outcome's arrival
    /// (exponential, so some outcomes straddle a step change by far more).
    pub mean_delay: f64,
    /// Outcomes are delivered this many at a time.
    pub batch: usize,
    /// Each delivered batch reaches the monitor as outcome windows (one per snapshot
    /// version in it, both arms together), as an SDK that aggregates sends it, rather than
    /// event by event.
    pub windows: bool,
}

impl Traffic {
    /// 10,000 users with 80/20 volumes over 200 tenants, 10 of them excluded; outcomes about
    /// 200 requests late.
    pub fn production(batch: usize) -> Traffic {
        Traffic {
            users: 10_000,
            volume_shape: 1.16,
            tenants: 200,
            excluded_tenants: 10,
            mean_delay: 200.0,
            batch,
            windows: false,
        }
    }
}

/// Users with fixed volumes and tenants, drawn once per seed.
#[derive(Clone, Debug)]
pub struct Population {
    /// Running sum of user volumes (the last entry is the total).
    cumulative: Vec<f64>,
    tenant_of: Vec<u32>,
    excluded_tenants: u32,
}

impl Population {
    pub fn new(t: &Traffic, seed: u64) -> Population {
        let mut rng = sim_rng(seed);
        let users = t.users.max(1);
        let tenants = t.tenants.max(1);
        let mut cumulative = Vec::with_capacity(users as usize);
        let mut tenant_of = Vec::with_capacity(users as usize);
        let mut total = 0.0;
        for _ in 0..users {
            let volume = if t.volume_shape.is_finite() && t.volume_shape > 0.0 {
                // Pareto(1, shape) by inversion; 1 - u is in (0, 1].
                (1.0 - rng.random::<f64>()).powf(-1.0 / t.volume_shape)
            } else {
                1.0
            };
            total += volume;
            cumulative.push(total);
            tenant_of.push(rng.random_range(0..tenants));
        }
        Population {
            cumulative,
            tenant_of,
            excluded_tenants: t.excluded_tenants.min(tenants),
        }
    }

    pub fn users(&self) -> u32 {
        // Built from a u32 count.
        u32::try_from(self.cumulative.len()).unwrap_or(u32::MAX)
    }

    /// The user of the next request, in proportion to volume.
    pub fn draw(&self, rng: &mut SimRng) -> u32 {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|c| *c <= x);
        u32::try_from(i.min(self.cumulative.len().saturating_sub(1))).unwrap_or(0)
    }

    pub fn tenant(&self, user: u32) -> u32 {
        self.tenant_of.get(user as usize).copied().unwrap_or(0)
    }

    pub fn is_excluded(&self, tenant: u32) -> bool {
        tenant < self.excluded_tenants
    }

    /// The share of all requests sent by the heaviest user (how lumpy a sticky arm can be).
    pub fn heaviest_share(&self) -> f64 {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let mut prev = 0.0;
        let mut max: f64 = 0.0;
        for c in &self.cumulative {
            max = max.max(c - prev);
            prev = *c;
        }
        if total > 0.0 { max / total } else { 0.0 }
    }

    pub fn user_key(user: u32) -> String {
        format!("u{user}")
    }

    pub fn tenant_key(tenant: u32) -> String {
        format!("t{tenant}")
    }

    /// The tenant names a plan's `exclude_tenants` lists.
    pub fn excluded_tenant_keys(&self) -> Vec<String> {
        (0..self.excluded_tenants).map(Self::tenant_key).collect()
    }
}

/// One item in flight, ordered by arrival (then by when it was sent).
#[derive(Debug)]
struct InFlight<T> {
    ready_at: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for InFlight<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.ready_at, self.seq) == (other.ready_at, other.seq)
    }
}
impl<T> Eq for InFlight<T> {}
impl<T> PartialOrd for InFlight<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for InFlight<T> {
    // Reversed: `BinaryHeap` is a max-heap and the earliest arrival must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.ready_at, other.seq).cmp(&(self.ready_at, self.seq))
    }
}

/// Outcomes between their request and their delivery: each arrives an exponential delay
/// (in requests) after it was sent, and arrived outcomes leave in batches of a fixed size.
#[derive(Debug)]
pub struct Pipe<T> {
    mean_delay: f64,
    batch: usize,
    in_flight: BinaryHeap<InFlight<T>>,
    arrived: VecDeque<T>,
    seq: u64,
}

impl<T> Pipe<T> {
    pub fn new(mean_delay: f64, batch: usize) -> Pipe<T> {
        Pipe {
            mean_delay: mean_delay.max(0.0),
            batch: batch.max(1),
            in_flight: BinaryHeap::new(),
            arrived: VecDeque::new(),
            seq: 0,
        }
    }

    /// Sends `item` at request count `now`.
    pub fn send(&mut self, now: u64, item: T, rng: &mut SimRng) {
        let delay = if self.mean_delay > 0.0 {
            // Exponential by inversion; f64 → u64 saturates, and delays are small.
            (-(1.0 - rng.random::<f64>()).ln() * self.mean_delay).round() as u64
        } else {
            0
        };
        self.seq += 1;
        self.in_flight.push(InFlight {
            ready_at: now.saturating_add(delay),
            seq: self.seq,
            item,
        });
    }

    /// The next full batch of outcomes that have arrived by `now`, oldest arrival first.
    pub fn batch(&mut self, now: u64) -> Option<Vec<T>> {
        while self.in_flight.peek().is_some_and(|f| f.ready_at <= now) {
            if let Some(f) = self.in_flight.pop() {
                self.arrived.push_back(f.item);
            }
        }
        (self.arrived.len() >= self.batch).then(|| self.arrived.drain(..self.batch).collect())
    }

    /// Outcomes sent and not yet delivered.
    pub fn len(&self) -> usize {
        self.in_flight.len() + self.arrived.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
