//! The run's tickets: the endpoints of its training and validation queries,
//! planned on the flight-servers — and planned again before they expire or
//! as soon as a server refuses them.
//!
//! A ticket lives for its server's `--ticket-ttl` (an hour by default) and
//! is signed with its server's key, while a run may last many hours and a
//! flight-server may be restarted with another key. With `cache = "none"`
//! every unit and validation pass reads with the tickets the runner hands
//! it, and a trainer that is replaced reads its partition again in any
//! cache mode; so the runner plans again a little before the tickets
//! expire, and at once when a trainer reports a refusal
//! ([`Error::TicketRefused`]). The layout (how many endpoints each query
//! has) must stay the same: it decides which trainer holds which rows.
//!
//! # Logins
//! The runner logs in (`HOPPER_FLIGHT_USER`) to every flight-server its
//! endpoints name whenever it plans, and hands each endpoint to its trainer
//! with the Bearer token of that server: trainers read as the runner's user
//! and need no login of their own. A token the server refuses later
//! (expired, or the server restarted) fails the read like a refused ticket,
//! and planning again logs in again. Tokens live in memory only: neither
//! the checkpoint nor any other file of the run holds one.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use flight_client::connect::{login, Bearer};
use flight_client::plan::plan_query_at;
use flight_client::retry::Backoff;
use flight_client::FlightSlice;
use hopper_proto::FlightEndpoint;

use crate::error::{Error, Result};
use crate::pins::Pins;

/// The endpoints a run reads, and when their tickets expire.
pub struct Plan {
    locations: Vec<String>,
    train_sql: String,
    validation_sql: Option<String>,
    /// Endpoints of the training query, over every location, in order.
    pub train: Vec<FlightSlice>,
    /// Endpoints of the validation query (empty without one).
    pub validation: Vec<FlightSlice>,
    /// The runner's login at each location the endpoints name (none when
    /// it logs in nowhere).
    logins: BTreeMap<String, Bearer>,
    planned: SystemTime,
    expires: Option<SystemTime>,
    /// How many times the run planned again.
    pub replans: u32,
    /// The snapshots every plan is made at.
    pub pins: Pins,
    /// Whether each pass reads its rows again (`cache = "none"`).
    reads_every_pass: bool,
    /// Whether each endpoint can be read once only (Greenplum).
    single_read: bool,
    /// With single-read endpoints and reads every pass: the training plans
    /// not yet read by every trainer, oldest first — one plan per round of
    /// units, each trainer reading its own endpoints of it
    /// ([`Plan::train_for`]). `first_round` numbers the front.
    rounds: VecDeque<Vec<FlightSlice>>,
    first_round: u64,
    /// Per trainer, the round it reads next.
    next_round: Vec<u64>,
    /// Training and validation plans made, for the run's summary.
    pub plans: u64,
}

struct Planned {
    train: Vec<FlightSlice>,
    validation: Vec<FlightSlice>,
    logins: BTreeMap<String, Bearer>,
    expires: Option<SystemTime>,
    single_read: bool,
}

impl Plan {
    /// Plans `train_sql` (and `validation_sql`) on every location, at the
    /// snapshots of `pins`; `reads_every_pass` when every unit and
    /// validation pass reads its rows again (`cache = "none"`).
    pub async fn new(
        locations: Vec<String>,
        train_sql: String,
        validation_sql: Option<String>,
        pins: Pins,
        reads_every_pass: bool,
    ) -> Result<Self> {
        let mut plan = Plan {
            locations,
            train_sql,
            validation_sql,
            train: Vec::new(),
            validation: Vec::new(),
            logins: BTreeMap::new(),
            planned: SystemTime::now(),
            expires: None,
            replans: 0,
            pins,
            reads_every_pass,
            single_read: false,
            rounds: VecDeque::new(),
            first_round: 0,
            next_round: Vec::new(),
            plans: 0,
        };
        let fresh = plan.fetch().await?;
        plan.take(fresh);
        Ok(plan)
    }

    /// Whether passes take plans of their own: endpoints read once
    /// (Greenplum) by passes that read every time.
    /// Whether units are planned round by round ([`Plan::train_for`]):
    /// endpoints read once, read by every unit.
    pub fn by_round(&self) -> bool {
        self.single_read && self.reads_every_pass
    }

    async fn fetch(&mut self) -> Result<Planned> {
        let (train, mut expires, single_read) =
            plan_all(&self.locations, &self.train_sql, &mut self.pins).await?;
        self.plans += 1;
        let validation = match &self.validation_sql {
            // Planned by each evaluation when plans are made per round: a
            // cursor planned now would wait unread until then.
            Some(_) if single_read && self.reads_every_pass => Vec::new(),
            Some(sql) => {
                let (v, e, _) = plan_all(&self.locations, sql, &mut self.pins).await?;
                self.plans += 1;
                expires = earliest(expires, e);
                v
            }
            None => Vec::new(),
        };
        let mut logins = BTreeMap::new();
        log_in(&mut logins, train.iter().chain(&validation)).await?;
        Ok(Planned {
            train,
            validation,
            logins,
            expires,
            single_read,
        })
    }

    fn take(&mut self, p: Planned) {
        self.single_read = p.single_read;
        if self.by_round() {
            // Every trainer reads the fresh plan next; plans not read by
            // everyone yet are dropped (their cursors close unread).
            let next = self.next_round.iter().copied().max().unwrap_or(0);
            self.rounds = VecDeque::from([p.train.clone()]);
            self.first_round = next;
            self.next_round.iter_mut().for_each(|r| *r = next);
        } else {
            self.validation = p.validation;
        }
        self.train = p.train;
        self.logins = p.logins;
        self.expires = p.expires;
    }

    /// Whether the run validates (its validation query has endpoints, or
    /// is planned by each evaluation).
    pub fn has_validation(&self) -> bool {
        !self.validation.is_empty() || (self.by_round() && self.validation_sql.is_some())
    }

    /// The training endpoints trainer `p` of `w` reads in its next unit.
    /// Where endpoints can be read once (Greenplum) and units read every
    /// time, each round of units shares one plan — the trainer reading
    /// each partition next reads its endpoints of the oldest plan it has not
    /// read — so every endpoint of every plan is read, and no segment runs a
    /// query whose rows nobody reads. Elsewhere, the same endpoints every time.
    pub async fn train_for(&mut self, p: usize, w: usize) -> Result<Vec<FlightEndpoint>> {
        if !self.by_round() {
            return Ok(self.train_part(p, w));
        }
        if self.next_round.len() != w {
            self.next_round = vec![self.first_round; w];
        }
        let round = self.next_round[p];
        while self.first_round + self.rounds.len() as u64 <= round {
            let (slices, _, _) = plan_all(&self.locations, &self.train_sql, &mut self.pins).await?;
            self.plans += 1;
            self.log_in(&slices).await?;
            self.rounds.push_back(slices);
        }
        let endpoints = self.part(&self.rounds[(round - self.first_round) as usize], p, w);
        self.next_round[p] += 1;
        let oldest = self.next_round.iter().copied().min().unwrap_or(0);
        while self.first_round < oldest && !self.rounds.is_empty() {
            self.rounds.pop_front();
            self.first_round += 1;
        }
        Ok(endpoints)
    }

    /// The validation endpoints of every trainer (`w` of them) for one
    /// evaluation: a plan of its own where endpoints can be read once and
    /// evaluations read every time (all of its endpoints are read).
    pub async fn validation_for(&mut self, w: usize) -> Result<Vec<Vec<FlightEndpoint>>> {
        if self.by_round() {
            if let Some(sql) = &self.validation_sql {
                let (slices, _, _) = plan_all(&self.locations, sql, &mut self.pins).await?;
                self.plans += 1;
                self.log_in(&slices).await?;
                self.validation = slices;
            }
        }
        Ok((0..w).map(|p| self.validation_part(p, w)).collect())
    }

    /// Logs in at any location of `slices` the runner has no token for.
    async fn log_in(&mut self, slices: &[FlightSlice]) -> Result<()> {
        log_in(&mut self.logins, slices).await
    }

    /// Whether the tickets expire soon: within a quarter of their lifetime,
    /// at most five minutes (a read that waits out a short outage must
    /// still start before the expiry).
    pub fn expiring(&self) -> bool {
        let Some(expires) = self.expires else {
            return false;
        };
        let life = expires
            .duration_since(self.planned)
            .unwrap_or(Duration::ZERO);
        let margin = (life / 4).min(Duration::from_secs(300));
        SystemTime::now() + margin >= expires
    }

    /// Plans again, retrying while a flight-server is unreachable (for the
    /// read retry budget, `HOPPER_READ_RETRY_SECONDS`).
    pub async fn refresh(&mut self) -> Result<()> {
        let mut backoff = Backoff::from_env();
        let planned = SystemTime::now();
        let fresh = loop {
            match self.fetch().await {
                Ok(p) => break p,
                Err(e @ (Error::Flight(_) | Error::Unavailable(_))) => {
                    tracing::warn!(error = %e, "planning again: retrying");
                    if !backoff.wait().await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        for (what, old, new) in [
            ("training", &self.train, &fresh.train),
            ("validation", &self.validation, &fresh.validation),
        ] {
            // Validation planned per evaluation is not planned here.
            if old.len() != new.len() && !(self.by_round() && what == "validation") {
                return Err(Error::Config(format!(
                    "planned again, the {what} query has {} endpoints instead of {}: \
                     the segments (or the flight-servers' --split) changed during the run; \
                     restore them and `--resume`",
                    new.len(),
                    old.len()
                )));
            }
        }
        self.take(fresh);
        self.planned = planned;
        self.replans += 1;
        Ok(())
    }

    /// The training endpoints of partition `p` of `w`: endpoint `i` goes
    /// to partition `i % w`.
    /// Each carries the runner's Bearer token for its location.
    pub fn train_part(&self, p: usize, w: usize) -> Vec<FlightEndpoint> {
        self.part(&self.train, p, w)
    }

    /// The validation endpoints of partition `p` of `w`.
    pub fn validation_part(&self, p: usize, w: usize) -> Vec<FlightEndpoint> {
        self.part(&self.validation, p, w)
    }

    fn part(&self, slices: &[FlightSlice], p: usize, w: usize) -> Vec<FlightEndpoint> {
        slices
            .iter()
            .enumerate()
            .filter(|(i, _)| i % w == p)
            .map(|(_, s)| FlightEndpoint {
                location: s.location.clone(),
                ticket: s.ticket.clone(),
                bearer: self
                    .logins
                    .get(&s.location)
                    .map(|b| b.secret().to_owned())
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// Logs in (`HOPPER_FLIGHT_USER`) at every location of `slices` that
/// `logins` has no token for.
async fn log_in(
    logins: &mut BTreeMap<String, Bearer>,
    slices: impl IntoIterator<Item = &FlightSlice>,
) -> Result<()> {
    for location in slices.into_iter().map(|s| &s.location) {
        if !logins.contains_key(location) {
            if let Some(bearer) = login(location).await? {
                logins.insert(location.clone(), bearer);
            }
        }
    }
    Ok(())
}

/// Plans `sql` on every location at its pinned snapshot, endpoints in
/// location order; a pin found gone is taken again (once per location).
async fn plan_all(
    locations: &[String],
    sql: &str,
    pins: &mut Pins,
) -> Result<(Vec<FlightSlice>, Option<SystemTime>, bool)> {
    let mut slices = Vec::new();
    let mut expires = None;
    let mut single_read = false;
    for location in locations {
        let planned = match plan_query_at(location, None, sql, pins.id(location).as_deref()).await {
            Err(flight_client::Error::SnapshotLost(why)) => {
                pins.repin(location, &why).await?;
                plan_query_at(location, None, sql, pins.id(location).as_deref()).await?
            }
            planned => planned?,
        };
        slices.extend(planned.slices);
        expires = earliest(expires, planned.expires);
        single_read |= planned.single_read;
    }
    Ok((slices, expires, single_read))
}

fn earliest(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(life: Duration, age: Duration) -> Plan {
        let planned = SystemTime::now() - age;
        Plan {
            locations: Vec::new(),
            train_sql: String::new(),
            validation_sql: None,
            train: (0..5)
                .map(|i| FlightSlice {
                    location: format!("grpc+tcp://h:{}", i % 2),
                    ticket: vec![i as u8],
                    bearer: None,
                })
                .collect(),
            validation: Vec::new(),
            logins: BTreeMap::from([(
                "grpc+tcp://h:1".to_string(),
                Bearer::new("token-of-h1").unwrap(),
            )]),
            planned,
            expires: Some(planned + life),
            replans: 0,
            pins: Pins::none(),
            reads_every_pass: false,
            single_read: false,
            rounds: VecDeque::new(),
            first_round: 0,
            next_round: Vec::new(),
            plans: 1,
        }
    }

    #[test]
    fn tickets_expire_a_quarter_of_their_life_early_at_most_five_minutes() {
        let hour = Duration::from_secs(3600);
        assert!(!plan(hour, Duration::from_secs(3200)).expiring());
        assert!(plan(hour, Duration::from_secs(3400)).expiring());
        let short = Duration::from_secs(8);
        assert!(!plan(short, Duration::from_secs(5)).expiring());
        assert!(plan(short, Duration::from_secs(7)).expiring());
        let mut never = plan(hour, hour * 2);
        never.expires = None;
        assert!(!never.expiring());
    }

    #[tokio::test]
    async fn single_read_plans_are_dealt_one_round_per_unit_and_each_is_read_by_every_trainer() {
        let mut p = plan(Duration::from_secs(60), Duration::ZERO);
        p.single_read = true;
        p.reads_every_pass = true;
        // Three plans of two endpoints each, as GetFlightInfo made them.
        p.rounds = (0..3u8)
            .map(|r| {
                (0..2u8)
                    .map(|i| FlightSlice {
                        location: "grpc+tcp://h:0".into(),
                        ticket: vec![r, i],
                        bearer: None,
                    })
                    .collect()
            })
            .collect();
        async fn take(p: &mut Plan, w: usize) -> Vec<u8> {
            p.train_for(w, 2).await.unwrap()[0].ticket.clone()
        }
        // Trainer 0 runs ahead: its own endpoint of each plan in turn.
        assert_eq!(take(&mut p, 0).await, [0, 0]);
        assert_eq!(take(&mut p, 0).await, [1, 0]);
        // Trainer 1 reads the plans trainer 0 read, in the same order.
        assert_eq!(take(&mut p, 1).await, [0, 1]);
        assert_eq!(take(&mut p, 0).await, [2, 0]);
        assert_eq!(take(&mut p, 1).await, [1, 1]);
        assert_eq!(take(&mut p, 1).await, [2, 1]);
        // Plans read by both are let go.
        assert!(p.rounds.is_empty());
        assert_eq!(p.first_round, 3);
    }

    #[test]
    fn endpoints_are_dealt_round_robin_with_the_token_of_their_location() {
        let p = plan(Duration::from_secs(60), Duration::ZERO);
        let tickets =
            |v: Vec<FlightEndpoint>| v.into_iter().map(|e| e.ticket[0]).collect::<Vec<_>>();
        assert_eq!(tickets(p.train_part(0, 2)), vec![0, 2, 4]);
        assert_eq!(tickets(p.train_part(1, 2)), vec![1, 3]);
        assert!(p.validation_part(1, 2).is_empty());
        // Each endpoint carries the runner's token for its own location.
        let bearers = |v: Vec<FlightEndpoint>| v.into_iter().map(|e| e.bearer).collect::<Vec<_>>();
        assert_eq!(bearers(p.train_part(0, 2)), vec![""; 3]);
        assert_eq!(bearers(p.train_part(1, 2)), vec!["token-of-h1"; 2]);
    }
}
