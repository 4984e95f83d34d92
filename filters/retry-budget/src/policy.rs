//! The retry budget's pure core: the budget of one key as a sliding window of deposits and
//! withdrawals ([`BudgetState`], the value kept in shared data), the steps both roles take on it,
//! and the parsers of the client bytes the filter reads (attempt counts, pushback). No
//! hostcalls, no clock: time is passed in.
//!
//! # Algorithm
//!
//! As Finagle's `RetryBudget` and tower's `TpsBudget`, in milli-tokens so that fractional
//! ratios stay exact in integers:
//!
//! - Every first attempt deposits `ratio` of a token; every retry withdraws one token.
//! - Deposits and withdrawals land in the current time bucket (`ttl / buckets` wide) and stop
//!   counting once `buckets` newer buckets exist: they expire after `ttl` (at bucket
//!   granularity, so after between `ttl - ttl/buckets` and `ttl`).
//! - The balance is `min_retries_per_second × ttl` (a reserve that never expires, so a quiet
//!   key can retry) plus the live deposits minus the live withdrawals; what may be spent is
//!   the balance in whole tokens, never below zero.
//!
//! **Client role: reserve, then settle.** A request deposits, then reserves (withdraws at
//! once) `min(available, max_retries)` retries, which the filter hands Envoy's router as
//! `x-envoy-max-retries`. When the response shows how many retries were made
//! (`x-envoy-attempt-count` − 1), the unused part is refunded into the bucket the reservation
//! was taken from (nothing, if that bucket has expired). Reserving up front means concurrent
//! requests never spend the same tokens: the budget is never overspent, whatever the
//! contention. The price is undershoot: tokens reserved by requests in flight, and refunds a
//! worker has not written yet, are unavailable meanwhile.
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
/// Longest budget key kept; a longer one is charged to the overflow budget.
pub const MAX_KEY_LEN: usize = 128;

/// The budget's parameters, derived once from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Milli-tokens one first attempt deposits.
    deposit_milli: u64,
    /// Milli-tokens that never expire (`min_retries_per_second × ttl`).
    reserve_milli: u64,
    bucket_nanos: u64,
    buckets: u32,
    max_retries: u32,
}

impl Budget {
    /// The budget described by `config`.
    pub fn new(config: &RetryBudgetConfig) -> Budget {
        let ttl_ms = config.ttl_ms.as_millis().max(1);
        let buckets = config.buckets.max(1);
        Budget {
            // Rounded to a thousandth of a token.
            deposit_milli: (config.ratio.get() * MILLI as f64).round() as u64,
            reserve_milli: u64::from(config.min_retries_per_second).saturating_mul(ttl_ms),
            bucket_nanos: (ttl_ms.saturating_mul(1_000_000) / u64::from(buckets)).max(1),
            buckets,
            max_retries: config.max_retries,
        }
    }

    /// The most retries one request may reserve.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// Tokens of the reserve (`min_retries_per_second × ttl`).
    pub fn reserve_tokens(&self) -> u64 {
        self.reserve_milli / MILLI
    }

    fn bucket_of(&self, now: Timestamp) -> u64 {
        now.as_nanos() / self.bucket_nanos
    }
}

/// Deposits and withdrawals of one time bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    /// First attempts (each deposits `ratio`).
    requests: u64,
    /// Retries withdrawn (reserved, less refunds).
    retries: u64,
}

/// Retries reserved for one request: how many, and the bucket they were withdrawn from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reservation {
    /// Index of the bucket the retries were withdrawn from.
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

/// Reserved retries a request did not use, to give back to the bucket they came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refund {
    /// Index of the bucket the retries were withdrawn from.
    pub bucket: u64,
    /// Retries to give back.
    pub retries: u32,
}

/// One key's budget, as stored in shared data (see the module doc).
///
/// Layout (little-endian): `u32` owner length, owner bytes, `u64` bucket width in ns, `u64`
/// newest bucket index, `u64` pushback end in ns (0: none), `u32` bucket count `n`, then `n`
/// pairs of `u64` (first attempts, retries), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetState {
    owner: Vec<u8>,
    bucket_nanos: u64,
    newest_bucket: u64,
    pushback_until: u64,
    buckets: Vec<Bucket>,
}

impl BudgetState {
    /// The layout version, part of the shared-data key.
    pub const FORMAT_VERSION: u8 = 1;

    /// An empty budget for key `owner` (empty: the overflow budget) at `now`.
    pub fn new(budget: &Budget, owner: &[u8], now: Timestamp) -> BudgetState {
        BudgetState {
            owner: owner.to_vec(),
            bucket_nanos: budget.bucket_nanos,
            newest_bucket: budget.bucket_of(now),
            pushback_until: 0,
            buckets: vec![Bucket::default(); budget.buckets as usize],
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

    /// Whether nothing in the budget counts any more at `now`: every bucket expired and no
    /// pushback active. An idle budget's slot may be taken by another key.
    pub fn is_idle(&self, budget: &Budget, now: Timestamp) -> bool {
        self.live(budget.bucket_of(now)).is_empty() && now.as_nanos() >= self.pushback_until
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

    /// The balance at `now` in milli-tokens (negative once withdrawals outlive the deposits
    /// that paid for them).
    pub fn balance_milli(&self, budget: &Budget, now: Timestamp) -> i128 {
        let (requests, retries) = self.live(budget.bucket_of(now)).iter().fold(
            (0u128, 0u128),
            |(requests, retries), bucket| {
                (
                    requests + u128::from(bucket.requests),
                    retries + u128::from(bucket.retries),
                )
            },
        );
        let credit = u128::from(budget.reserve_milli) + requests * u128::from(budget.deposit_milli);
        let debit = retries * u128::from(MILLI);
        i128::try_from(credit).unwrap_or(i128::MAX) - i128::try_from(debit).unwrap_or(i128::MAX)
    }

    /// Whole tokens (retries) that may be spent at `now`; never negative.
    pub fn available(&self, budget: &Budget, now: Timestamp) -> u64 {
        let balance = self.balance_milli(budget, now).max(0) / i128::from(MILLI);
        u64::try_from(balance).unwrap_or(u64::MAX)
    }

    /// Whether a pushback stops retries at `now`.
    pub fn pushed_back(&self, now: Timestamp) -> bool {
        now.as_nanos() < self.pushback_until
    }

    /// Moves the window to end with `now`'s bucket, expiring the buckets that leave it. A clock
    /// that went backwards counts as the newest bucket.
    fn advance(&mut self, budget: &Budget, now: Timestamp) -> &mut Bucket {
        let bucket = budget.bucket_of(now);
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
        &mut self.buckets[0]
    }

    /// Client role: a request at `now` deposits, then reserves as many retries as the budget
    /// affords, up to `max_retries` (none while pushed back).
    pub fn reserve(&mut self, budget: &Budget, now: Timestamp) -> Reservation {
        let bucket = budget.bucket_of(now).max(self.newest_bucket);
        self.advance(budget, now).requests += 1;
        let retries = if self.pushed_back(now) {
            0
        } else {
            let affordable = self.available(budget, now);
            u32::try_from(affordable)
                .unwrap_or(u32::MAX)
                .min(budget.max_retries)
        };
        self.advance(budget, now).retries += u64::from(retries);
        Reservation { bucket, retries }
    }

    /// Client role: gives back a refund, into its bucket if that still counts.
    pub fn refund(&mut self, budget: &Budget, now: Timestamp, refund: Refund) {
        self.advance(budget, now);
        let Some(age) = self.newest_bucket.checked_sub(refund.bucket) else {
            return;
        };
        if let Some(bucket) = usize::try_from(age)
            .ok()
            .and_then(|age| self.buckets.get_mut(age))
        {
            bucket.retries = bucket.retries.saturating_sub(u64::from(refund.retries));
        }
    }

    /// Client role: stops retries until `now + duration` (a longer pushback already active
    /// stays).
    pub fn push_back(&mut self, now: Timestamp, duration: Duration) {
        let until = now.saturating_add(duration).as_nanos();
        self.pushback_until = self.pushback_until.max(until);
    }

    /// Server role: a first attempt at `now` deposits.
    pub fn first_attempt(&mut self, budget: &Budget, now: Timestamp) {
        self.advance(budget, now).requests += 1;
    }

    /// Server role: a retry at `now` withdraws a token if there is one; `false` rejects it.
    pub fn admit_retry(&mut self, budget: &Budget, now: Timestamp) -> bool {
        self.advance(budget, now);
        let admitted = self.available(budget, now) >= 1;
        if admitted {
            self.buckets[0].retries += 1;
        }
        admitted
    }
}

impl SharedValue for BudgetState {
    fn encode(&self) -> Vec<u8> {
        let mut out = ByteWriter::with_capacity(36 + self.owner.len() + 16 * self.buckets.len());
        out.u32(u32::try_from(self.owner.len()).unwrap_or(u32::MAX))
            .bytes(&self.owner)
            .u64(self.bucket_nanos)
            .u64(self.newest_bucket)
            .u64(self.pushback_until)
            .u32(u32::try_from(self.buckets.len()).unwrap_or(u32::MAX));
        for bucket in &self.buckets {
            out.u64(bucket.requests).u64(bucket.retries);
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
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        input.finish()?;
        Ok(BudgetState {
            owner,
            bucket_nanos,
            newest_bucket,
            pushback_until,
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
