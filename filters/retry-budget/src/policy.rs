//! The retry budget's pure core: the budget of one key as a capped, expiring balance of retry
//! tokens kept in time buckets ([`BudgetState`], the value kept in shared data), the steps both
//! roles take on it, and the parsers of the client bytes the filter reads (attempt counts,
//! pushback). No hostcalls, no clock: time is passed in.
//!
//! # Algorithm
//!
//! As Finagle's `RetryBudget` and tower's `TpsBudget` (every first attempt deposits `ratio` of a
//! retry, every retry withdraws one, deposits expire after `ttl`), in milli-tokens so that
//! fractional ratios stay exact in integers, with two changes that make the ratio a bound on the
//! retries of the traffic they are drawn against rather than an average over `ttl`:
//!
//! - **The per-second minimum is a floor, not an addition.** Time is cut into `buckets` buckets of
//!   `w = ttl / buckets`. By any moment, a bucket has been credited `max(ratio × its first
//!   attempts so far, min_retries_per_second × its time so far)`: the floor accrues with time (so
//!   a quiet key can retry), and a first attempt deposits only what lifts the bucket's `ratio`
//!   share above the floor accrued. Busy keys get exactly `ratio`; quiet ones get the floor.
//! - **The balance is capped.** The unspent tokens of a key never exceed the *cap*:
//!   `max(max_retries, min_retries_per_second × 1 s)` (one second of the floor, at least one
//!   request's retries). Credit that lifts the balance above it (deposits, floor, refunds)
//!   pushes out the oldest credit, so the balance is the newest credit up to the cap: a long
//!   healthy spell cannot bank a burst to spend when a fault begins. A fresh budget starts full
//!   (as an idle key refills, at the floor's rate).
//!
//! Credit is kept in the bucket it was credited in (the floor in the newest) and spent oldest
//! first; unspent credit stops counting once `buckets` newer buckets exist, so it expires after
//! `ttl` (at bucket granularity, after between `ttl - w` and `ttl`). A token is spent once:
//! withdrawals never expire back into credit, so the balance never goes negative and nothing is
//! spent twice.
//!
//! **Bound.** Over any interval `(a, b]`, the retries made by the requests that reserved in it
//! (client role) or admitted in it (server role) are at most
//!
//! `ratio × first attempts in (a, b]  +  min_retries_per_second × (b − a)  +  cap  +  L(a)`
//!
//! where `L(a)` is what the reservations made before `a` still had to refund at `a` (client role
//! only: refunds of loans outstanding when the interval began); the floor term adds nothing for a
//! key whose `ratio` share exceeds its floor in every bucket. Proof sketch: the balance at `a` is
//! at most the cap, and within `(a, b]` it only grows by the buckets' credit (at most the first
//! two terms) and by refunds (of reservations made inside the interval, which are then not
//! counted as retries made, or of the loans `L(a)`). `tests/properties.rs` checks it on random
//! traffic.
//!
//! **Client role: reserve, then settle.** A request deposits, then reserves (withdraws at once)
//! `min(available, max_retries)` retries, which the filter hands Envoy's router as
//! `x-envoy-max-retries`. When the response shows how many retries were made
//! (`x-envoy-attempt-count` − 1), the unused part is refunded into the bucket the reservation
//! was made in (nothing, if that bucket has expired; up to the cap). Reserving up front
//! means concurrent requests never spend the same tokens: the budget is never overspent,
//! whatever the contention. The price is undershoot: tokens reserved by requests in flight, and
//! refunds a worker has not written yet, are unavailable meanwhile.
//!
//! **Server role.** A first attempt deposits; a retry withdraws one token if there is one and
//! is rejected otherwise.
//!
//! **Pushback.** While a pushback is active (`pushback_until`), reservations are 0.

use crate::config::RetryBudgetConfig;
use meshkit::bytes::{ByteReader, ByteWriter};
use meshkit::clock::Timestamp;
use meshkit::shared::{DecodeError, SharedValue};
use std::time::{Duration, SystemTime};

/// Milli-tokens per token (one retry).
const MILLI: u64 = 1_000;
/// Nanoseconds per second.
const NANOS_PER_SECOND: u64 = 1_000_000_000;
/// Longest budget key kept; a longer one is charged to the overflow budget.
pub const MAX_KEY_LEN: usize = 128;

/// The budget's parameters, derived once from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Milli-tokens one first attempt deposits.
    deposit_milli: u64,
    /// `min_retries_per_second`.
    min_per_second: u64,
    /// The most milli-tokens a key holds unspent.
    cap_milli: u64,
    bucket_nanos: u64,
    buckets: u32,
    max_retries: u32,
}

impl Budget {
    /// The budget described by `config`.
    pub fn new(config: &RetryBudgetConfig) -> Budget {
        let ttl_ms = config.ttl_ms.as_millis().max(1);
        let buckets = config.buckets.max(1);
        let bucket_nanos = (ttl_ms.saturating_mul(1_000_000) / u64::from(buckets)).max(1);
        let min_per_second = u64::from(config.min_retries_per_second);
        Budget {
            // Rounded to a thousandth of a token.
            deposit_milli: (config.ratio.get() * MILLI as f64).round() as u64,
            min_per_second,
            cap_milli: min_per_second.max(u64::from(config.max_retries)) * MILLI,
            bucket_nanos,
            buckets,
            max_retries: config.max_retries,
        }
    }

    /// The most retries one request may reserve.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The most tokens a key holds unspent (see the module doc).
    pub fn cap_tokens(&self) -> u64 {
        self.cap_milli / MILLI
    }

    /// Milli-tokens one first attempt deposits (`ratio`, to a thousandth).
    pub fn deposit_milli(&self) -> u64 {
        self.deposit_milli
    }

    fn bucket_of(&self, now: Timestamp) -> u64 {
        now.as_nanos() / self.bucket_nanos
    }

    /// The floor accrued from time 0 to `nanos`, in milli-tokens (a difference of two is the
    /// floor of the time between them, so consecutive stretches add up exactly).
    fn floor_through(&self, nanos: u64) -> u64 {
        let milli = u128::from(self.min_per_second) * u128::from(nanos) * u128::from(MILLI)
            / u128::from(NANOS_PER_SECOND);
        u64::try_from(milli).unwrap_or(u64::MAX)
    }

    /// The floor accrued in bucket `index` by `nanos` (clamped to the bucket).
    fn floor_in_bucket(&self, index: u64, nanos: u64) -> u64 {
        let start = index.saturating_mul(self.bucket_nanos);
        let end = start.saturating_add(self.bucket_nanos);
        self.floor_through(nanos.clamp(start, end)) - self.floor_through(start)
    }
}

/// The first attempts, retries and unspent credit of one time bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    /// First attempts (each deposits what lifts `ratio × requests` above the floor).
    requests: u64,
    /// Retries withdrawn (reserved, less refunds).
    retries: u64,
    /// Credit of this bucket not yet spent, in milli-tokens.
    credit_milli: u64,
}

/// Retries reserved for one request: how many, and the bucket they were reserved in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reservation {
    /// Index of the bucket the retries were reserved in.
    pub bucket: u64,
    /// Retries reserved.
    pub retries: u32,
}

impl Reservation {
    /// What to give back once the request made `used` retries (more than reserved counts as
    /// all of them).
    pub fn settle(self, used: u32) -> Refund {
        Refund {
            bucket: self.bucket,
            retries: self.retries - used.min(self.retries),
        }
    }
}

/// Reserved retries a request did not use, to give back to the bucket they were reserved in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refund {
    /// Index of the bucket the retries were reserved in.
    pub bucket: u64,
    /// Retries to give back.
    pub retries: u32,
}

/// One key's budget, as stored in shared data (see the module doc).
///
/// Layout (little-endian): `u32` owner length, owner bytes, `u64` bucket width in ns, `u64`
/// newest bucket index, `u64` pushback end in ns (0: none), `u64` time of the last update in ns,
/// `u32` bucket count `n`, then `n` triples of `u64` (first attempts, retries, unspent
/// milli-tokens), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetState {
    owner: Vec<u8>,
    bucket_nanos: u64,
    newest_bucket: u64,
    pushback_until: u64,
    /// Until when the floor has been credited.
    last_update: u64,
    buckets: Vec<Bucket>,
}

impl BudgetState {
    /// The layout version, part of the shared-data key.
    pub const FORMAT_VERSION: u8 = 2;

    /// A budget for key `owner` (empty: the overflow budget) at `now`, full: holding the cap.
    pub fn new(budget: &Budget, owner: &[u8], now: Timestamp) -> BudgetState {
        let mut buckets = vec![Bucket::default(); budget.buckets as usize];
        buckets[0].credit_milli = budget.cap_milli;
        BudgetState {
            owner: owner.to_vec(),
            bucket_nanos: budget.bucket_nanos,
            newest_bucket: budget.bucket_of(now),
            pushback_until: 0,
            last_update: now.as_nanos(),
            buckets,
        }
    }

    /// The key this budget belongs to (empty for the overflow budget).
    pub fn owner(&self) -> &[u8] {
        &self.owner
    }

    /// Whether the state was made for `budget`'s window shape (a reconfigured `ttl_ms` or
    /// `buckets` starts afresh).
    pub fn fits(&self, budget: &Budget) -> bool {
        self.bucket_nanos == budget.bucket_nanos && self.buckets.len() == budget.buckets as usize
    }

    /// Whether nothing in the budget counts any more at `now`: no first attempt or retry in the
    /// window and no pushback active. An idle budget's slot may be taken by another key.
    pub fn is_idle(&self, budget: &Budget, now: Timestamp) -> bool {
        self.live(budget.bucket_of(now))
            .iter()
            .all(|bucket| bucket.requests == 0 && bucket.retries == 0)
            && now.as_nanos() >= self.pushback_until
    }

    /// The buckets still counting in the window ending with bucket `bucket`.
    fn live(&self, bucket: u64) -> &[Bucket] {
        let age = bucket.saturating_sub(self.newest_bucket);
        let live = usize::try_from(age)
            .ok()
            .and_then(|age| self.buckets.len().checked_sub(age))
            .unwrap_or(0);
        &self.buckets[..live]
    }

    /// Unspent milli-tokens (of the live buckets, once the window has been advanced).
    fn unspent_milli(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |sum, bucket| sum.saturating_add(bucket.credit_milli))
    }

    /// The balance at `now` in milli-tokens: the unspent credit, at most the cap.
    pub fn balance_milli(&self, budget: &Budget, now: Timestamp) -> u64 {
        if now.as_nanos() <= self.last_update {
            // Already advanced to `now` (e.g. read right after an update).
            return self.unspent_milli();
        }
        let mut state = self.clone();
        state.advance(budget, now);
        state.unspent_milli()
    }

    /// Whole tokens (retries) that may be spent at `now`.
    pub fn available(&self, budget: &Budget, now: Timestamp) -> u64 {
        self.balance_milli(budget, now) / MILLI
    }

    /// Whether a pushback stops retries at `now`.
    pub fn pushed_back(&self, now: Timestamp) -> bool {
        now.as_nanos() < self.pushback_until
    }

    /// Adds `milli` to the credit of bucket `age` (0: the newest); past the cap, the oldest
    /// credit goes.
    fn credit(&mut self, budget: &Budget, age: usize, milli: u64) {
        if let Some(bucket) = self.buckets.get_mut(age) {
            bucket.credit_milli = bucket.credit_milli.saturating_add(milli);
        }
        let excess = self.unspent_milli().saturating_sub(budget.cap_milli);
        self.take_oldest(excess);
    }

    /// Removes `milli` of credit (at most all of it), oldest first.
    fn take_oldest(&mut self, mut milli: u64) {
        for bucket in self.buckets.iter_mut().rev() {
            let taken = bucket.credit_milli.min(milli);
            bucket.credit_milli -= taken;
            milli -= taken;
        }
    }

    /// Moves the window to end with `now`'s bucket: credits the floor accrued since the last
    /// update (into the newest bucket), and the buckets that leave the window expire with their
    /// unspent credit. A clock that went backwards changes nothing.
    fn advance(&mut self, budget: &Budget, now: Timestamp) {
        let now = now.as_nanos();
        if now <= self.last_update {
            return;
        }
        // The last update's bucket keeps max(ratio share, floor): its floor counts only above
        // the share its first attempts already deposited.
        let share = self.buckets[0]
            .requests
            .saturating_mul(budget.deposit_milli);
        let current = self.newest_bucket;
        let before = share.max(budget.floor_in_bucket(current, self.last_update));
        let after = share.max(budget.floor_in_bucket(current, now));
        let current_end = current
            .saturating_add(1)
            .saturating_mul(budget.bucket_nanos);
        let later = budget
            .floor_through(now)
            .saturating_sub(budget.floor_through(current_end.max(self.last_update)));
        let gain = (after - before).saturating_add(later);
        let bucket = now / budget.bucket_nanos;
        if bucket > self.newest_bucket {
            let shift = usize::try_from(bucket - self.newest_bucket).unwrap_or(usize::MAX);
            if shift >= self.buckets.len() {
                self.buckets.fill(Bucket::default());
            } else {
                self.buckets.rotate_right(shift);
                self.buckets[..shift].fill(Bucket::default());
            }
            self.newest_bucket = bucket;
        }
        self.last_update = now;
        self.credit(budget, 0, gain);
    }

    /// A first attempt in the newest bucket: credits what lifts the bucket's `ratio` share above
    /// the floor it has accrued.
    fn deposit(&mut self, budget: &Budget) {
        let floor = budget.floor_in_bucket(self.newest_bucket, self.last_update);
        let newest = &mut self.buckets[0];
        let share = |requests: u64| requests.saturating_mul(budget.deposit_milli).max(floor);
        let gain = share(newest.requests + 1) - share(newest.requests);
        newest.requests += 1;
        self.credit(budget, 0, gain);
    }

    /// Spends `tokens` whole tokens, oldest credit first, if the balance holds them.
    fn withdraw(&mut self, tokens: u64) -> bool {
        let owed = tokens.saturating_mul(MILLI);
        if self.unspent_milli() < owed {
            return false;
        }
        self.take_oldest(owed);
        self.buckets[0].retries += tokens;
        true
    }

    /// Client role: a request at `now` deposits, then reserves as many retries as the budget
    /// affords, up to `max_retries` (none while pushed back).
    pub fn reserve(&mut self, budget: &Budget, now: Timestamp) -> Reservation {
        self.advance(budget, now);
        self.deposit(budget);
        let retries = if self.pushed_back(now) {
            0
        } else {
            let affordable = self.unspent_milli() / MILLI;
            u32::try_from(affordable)
                .unwrap_or(u32::MAX)
                .min(budget.max_retries)
        };
        self.withdraw(u64::from(retries));
        Reservation {
            bucket: self.newest_bucket,
            retries,
        }
    }

    /// Client role: gives back a refund, into its bucket if that still counts (up to the cap).
    pub fn refund(&mut self, budget: &Budget, now: Timestamp, refund: Refund) {
        self.advance(budget, now);
        let Some(age) = self.newest_bucket.checked_sub(refund.bucket) else {
            return;
        };
        let Some(age) = usize::try_from(age)
            .ok()
            .filter(|&age| age < self.buckets.len())
        else {
            return;
        };
        let bucket = &mut self.buckets[age];
        let returned = bucket.retries.min(u64::from(refund.retries));
        bucket.retries -= returned;
        self.credit(budget, age, returned * MILLI);
    }

    /// Client role: stops retries until `now + duration` (a longer pushback already active
    /// stays).
    pub fn push_back(&mut self, now: Timestamp, duration: Duration) {
        let until = now.saturating_add(duration).as_nanos();
        self.pushback_until = self.pushback_until.max(until);
    }

    /// Server role: a first attempt at `now` deposits.
    pub fn first_attempt(&mut self, budget: &Budget, now: Timestamp) {
        self.advance(budget, now);
        self.deposit(budget);
    }

    /// Server role: a retry at `now` withdraws a token if there is one; `false` rejects it.
    pub fn admit_retry(&mut self, budget: &Budget, now: Timestamp) -> bool {
        self.advance(budget, now);
        self.withdraw(1)
    }
}

impl SharedValue for BudgetState {
    fn encode(&self) -> Vec<u8> {
        let mut out = ByteWriter::with_capacity(44 + self.owner.len() + 24 * self.buckets.len());
        out.u32(u32::try_from(self.owner.len()).unwrap_or(u32::MAX))
            .bytes(&self.owner)
            .u64(self.bucket_nanos)
            .u64(self.newest_bucket)
            .u64(self.pushback_until)
            .u64(self.last_update)
            .u32(u32::try_from(self.buckets.len()).unwrap_or(u32::MAX));
        for bucket in &self.buckets {
            out.u64(bucket.requests)
                .u64(bucket.retries)
                .u64(bucket.credit_milli);
        }
        out.into_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        const WHAT: &str = "BudgetState";
        let mut input = ByteReader::new(bytes, WHAT);
        let owner_len = input.u32()?;
        if owner_len as usize > MAX_KEY_LEN {
            return Err(DecodeError::new(
                WHAT,
                format!("owner of {owner_len} bytes"),
            ));
        }
        let owner = input.take(owner_len as usize)?.to_vec();
        let bucket_nanos = input.u64()?;
        let newest_bucket = input.u64()?;
        let pushback_until = input.u64()?;
        let last_update = input.u64()?;
        let count = input.u32()?;
        if bucket_nanos == 0 || count == 0 || count > crate::config::limits::MAX_BUCKETS {
            return Err(DecodeError::new(
                WHAT,
                format!("bad window shape: {count} buckets of {bucket_nanos} ns"),
            ));
        }
        let buckets = (0..count)
            .map(|_| {
                Ok(Bucket {
                    requests: input.u64()?,
                    retries: input.u64()?,
                    credit_milli: input.u64()?,
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        input.finish()?;
        Ok(BudgetState {
            owner,
            bucket_nanos,
            newest_bucket,
            pushback_until,
            last_update,
            buckets,
        })
    }
}

/// `value` without leading and trailing ASCII whitespace.
fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// A decimal number of at most 18 digits (so it fits any `u64` computation), without sign.
fn decimal(value: &[u8]) -> Option<u64> {
    let digits = trim(value);
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0')),
    )
}

/// An attempt-count header (`x-envoy-attempt-count`, `grpc-previous-rpc-attempts`) as a
/// number; `None` when it is not a plain decimal.
pub fn parse_count(value: &[u8]) -> Option<u64> {
    decimal(value)
}

/// A `grpc-retry-pushback-ms` value: `Some(delay)` for a non-negative integer, `None` for a
/// negative or unparseable one (which gRPC defines as "do not retry").
pub fn parse_grpc_pushback(value: &[u8]) -> Option<Duration> {
    decimal(value).map(Duration::from_millis)
}

/// A `retry-after` value at `now` (nanoseconds since the Unix epoch): delta-seconds or an
/// HTTP-date; `None` when it is neither. A date in the past is a zero delay.
pub fn parse_retry_after(value: &[u8], now: Timestamp) -> Option<Duration> {
    if let Some(seconds) = decimal(value) {
        return Some(Duration::from_secs(seconds));
    }
    let text = std::str::from_utf8(trim(value)).ok()?;
    let date = httpdate::parse_http_date(text).ok()?;
    let now = SystemTime::UNIX_EPOCH + Duration::from_nanos(now.as_nanos());
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether an `x-mesh-shed` value marks a reply shed by load-shedder (`1`).
pub fn is_shed(value: &[u8]) -> bool {
    trim(value) == b"1"
}

/// The pushback signals of one response, as bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushbackSignals<'a> {
    /// The response's `:status`.
    pub status: Option<u32>,
    /// `grpc-retry-pushback-ms`.
    pub grpc_retry_pushback_ms: Option<&'a [u8]>,
    /// `retry-after`.
    pub retry_after: Option<&'a [u8]>,
    /// `x-mesh-shed`.
    pub mesh_shed: Option<&'a [u8]>,
}

/// How pushback durations are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushbackLimits {
    /// The pause when a signal names no delay (negative gRPC pushback, `x-mesh-shed` alone).
    pub default: Duration,
    /// The longest pause honoured.
    pub max: Duration,
}

/// How long a response asks its upstream's retries to stop, at `now`: the longest of its
/// signals, at most `limits.max`; `None` when it asks nothing (or a zero delay).
///
/// `retry-after` counts on 429 and 5xx responses only (elsewhere it is not about retries).
pub fn pushback(
    signals: &PushbackSignals<'_>,
    now: Timestamp,
    limits: PushbackLimits,
) -> Option<Duration> {
    let grpc = signals
        .grpc_retry_pushback_ms
        .map(|value| parse_grpc_pushback(value).unwrap_or(limits.default));
    let overload_status = signals
        .status
        .is_some_and(|status| status == 429 || (500..600).contains(&status));
    let retry_after = signals
        .retry_after
        .filter(|_| overload_status)
        .and_then(|value| parse_retry_after(value, now));
    let shed = signals
        .mesh_shed
        .filter(|value| is_shed(value))
        .map(|_| retry_after.unwrap_or(limits.default));
    [grpc, retry_after, shed]
        .into_iter()
        .flatten()
        .max()
        .map(|delay| delay.min(limits.max))
        .filter(|delay| !delay.is_zero())
}
