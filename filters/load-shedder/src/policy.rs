//! The adaptive, criticality-aware concurrency limit: [`SharedState`] (the one value all workers
//! share), [`Policy`] (the configuration compiled for the per-request path) and the two pure
//! per-request steps [`SharedState::admit`] and [`SharedState::release`].
//!
//! # Algorithm
//!
//! The limit is a delay-based AIMD controller (TCP Vegas' queue signal, Envoy's gradient,
//! BBR's windowed minimum), run in measurement windows, whose every cut is checked against
//! what it did to latency:
//!
//! * **Samples.** Every release records the request's latency into the current window's
//!   histogram. Successes always count; errors, resets and local replies count only when they
//!   are at least as slow as the smallest recent window latency, so fast failures cannot make
//!   an overloaded service look healthy while slow failures (timeouts, slow 5xx) still count.
//!   A zero latency is no sample: the glue measures on the host's wall clock, and only a clock
//!   stepping back between admission and release yields zero (such samples would pin the
//!   no-load latency at ~1 µs and the limit at its floor for the whole baseline window).
//! * **Windows** close on the release that finds the window at least `window_ms` old with at
//!   least `window_min_samples` samples, or as soon as it holds `window_max_samples` samples.
//!   So a busy service adapts every few hundred requests and a service seeing one request per
//!   second adapts on every request (Envoy's gradient controller needs a fixed number of
//!   requests per sample and stalls at low rates). Whichever worker closes a window applies the
//!   update inside the same pure function, so the update happens exactly once. The very first
//!   window closes as soon as it holds `initial_limit` samples: those requests started on an
//!   idle service, so even a flood arriving with the first request cannot put its queue into
//!   the first no-load latency. A release timestamped more than a window before the open
//!   window's start means the clock stepped back: every time reference restarts there, so
//!   windows keep closing.
//! * **No-load latency** (the baseline) is the smallest window latency (window quantile
//!   `latency_quantile`) seen in the last `baseline_window_ms` (to 4/3 of it), kept as four
//!   minima of a third of that window each, raised to the *unqueued latency* while one is known
//!   (below). It is never re-measured by pinning the limit low (Envoy's periodic minimum-RTT
//!   phase is what produces its 503 bursts): under sustained overload every verified cut
//!   brings the limit to roughly where the queue drains, and those windows measure the no-load
//!   latency again. Because the baseline is a minimum, not an average, it does not follow rising
//!   queueing latency (Gradient2's long-term average does, which lets its limit drift up under
//!   mild overload).
//! * **Decrease.** With `ratio = window latency / baseline`, a window *queues* if
//!   `ratio > 1 + tolerance`. A queueing window cuts the limit by `1 / ratio` (the in-flight
//!   count at which that latency would have had no queue); if `latency_target_ms` is set and
//!   exceeded the limit is cut by `target / latency` too, whatever the baseline says. The
//!   smaller factor applies, clamped to `[max_decrease, 0.9]`. A window in which the limit was
//!   not in use (see below) shrinks the limit no lower than its demand (`peak / utilization`,
//!   or the peak itself when the target is exceeded), so a slowdown that our concurrency did not
//!   cause cannot make the shedder refuse work by itself.
//! * **Every queueing cut is verified.** The window after a cut records only requests admitted
//!   after the cut, and judges it. Had the latency been queueing that our concurrency causes,
//!   the cut (keeping `kept` of the limit) would have lowered it about in proportion while the
//!   throughput (requests ended per second) held, the service being the bottleneck. If instead
//!   the latency fell by less than half of that and is still not within tolerance of the
//!   baseline, *and* the throughput fell by more than half of it (our limit was the
//!   bottleneck), in two windows in a row (one window can mislead: noise, a burst, requests
//!   from before the cut still ending; the first holds the limit), it was not queueing: the
//!   cut is undone (the limit goes back up) and the latency it was to
//!   lower becomes the *unqueued latency*, the no-load latency under the present conditions,
//!   for `baseline_window_ms`. The throughput keeps an overload's onset from looking like
//!   that: there latency still rises for a while after a cut (the queue ahead is served
//!   first) but the service's throughput holds. When the unqueued latency expires while latency
//!   is still above tolerance of the smallest recent window latency, one cut (by
//!   `max_decrease`) re-tests it: not lowered, it is renewed and the cut undone; lowered, the
//!   latency after the cut (if lower) is renewed as the unqueued latency. (With the limit not
//!   in use there is nothing to test: the window's latency is renewed as it is.) A window at
//!   `min_limit` (or held up by its demand) that queues cannot cut at all; its latency becomes
//!   the unqueued latency the same way. The operator's `latency_target_ms` is absolute: its
//!   cuts are not verified.
//! * **Persistence.** While an unqueued latency is known, latency is known to vary for reasons
//!   other than our concurrency (a busy host, a slow dependency), and a single slow window is
//!   as likely the host as queueing: then a window cuts only when the window before it queued
//!   too, and the cut must lower the smaller of the two. A single queueing window holds the
//!   limit, never grows it.
//! * **Increase** only when the window used the limit — some request was refused (or would
//!   have been, in dry run), slow start grew it on demand, or the peak in-flight count reached
//!   `utilization × limit` — and latency is within tolerance: doubling until the first cut (slow
//!   start), then `+ sqrt(limit)` per window. An app-limited service's limit never drifts up.
//! * **Slow start** (until the first cut) starts from the deliberately small `initial_limit`,
//!   a guess rather than a measurement. So that nothing is refused below the service's
//!   capacity while the limit is still growing towards it: each rank may fill its share of
//!   *twice* the limit (at most `max_limit`), which lets `sheddable` work (share 0.5 by
//!   default) use the whole limit while higher ranks keep their headroom above it; and a request
//!   that finds its share full doubles the limit on the spot instead of being refused, once per
//!   window and not after a queueing window. A window that grew on demand and then queued takes
//!   that growth back before it cuts.
//! * The limit is always kept within `[min_limit, max_limit]`, and the in-flight count never
//!   exceeds `max_limit` (outside dry run).
//!
//! # Why verify cuts
//!
//! A delay-based controller reads latency above its baseline as queueing it causes. When the
//! latency has another cause, every window cuts again and the limit falls to its floor, where
//! it stays: issue 13 saw the demo's limit locked at 4–6 while the sidecar, busy answering
//! 18,000 rejections a second, added its own delay to every request (window latency 2.5× the
//! baseline whatever the limit); a lower limit meant more rejections and a busier proxy, so the
//! state was self-sustaining. Asking whether a cut lowered latency tells the two causes apart
//! directly, at the cost of one window at a lower limit. The alternatives considered:
//!
//! * Measuring the service's own latency (Envoy's `x-envoy-upstream-service-time`, or time to
//!   the response headers) does not remove the busy proxy's delay: that header spans the
//!   router's event loop on both sides of the upstream call, and in the collapsed demo it read
//!   100–300 ms against a 10 ms service. It is also in whole milliseconds and absent from local
//!   replies and resets.
//! * A floor from the throughput served (Little's law, `served rate × no-load latency`) needs
//!   the no-load latency to turn throughput into concurrency; with the proxy's delay inflating
//!   latency, the rate served at the floor is set by the floor itself, so the floor decays with
//!   every memory period. And it would stop legitimate cuts when the service itself slows down.
//! * Probing upward on a schedule does not tell the controller that the latency is not its
//!   own: the probe's window still shows the same latency, and the next window cuts again.
//!
//! # Criticality
//!
//! Each [`Rank`] may fill a share of the limit: a request is admitted while the in-flight count
//! is below `max(1, share × limit)` (`share × min(2 × limit, max_limit)` in slow start). Shares
//! are non-increasing from `critical-plus` down to `sheddable` and a retry's share lies between
//! its criticality's and the next lower one's, so under any load a lower rank is refused
//! whenever a higher rank would be. A window in which only low ranks were refused still counts
//! as using the limit, so the limit grows to the service's capacity even when most traffic is
//! sheddable.

use crate::classify::Rank;
use crate::config::{ShedderConfig, MAX_DECREASE_CEILING};
use crate::histogram::{self, LatencyHistogram};
use meshkit::bytes::{ByteReader, ByteWriter, DecodeError};
use meshkit::clock::Timestamp;
use meshkit::shared::SharedValue;
use std::time::Duration;

/// Fixed-point scale of the per-rank shares (1.0 == `SHARE_ONE`).
const SHARE_ONE: u64 = 1 << 16;
/// Number of sub-window minima the baseline keeps.
const BASELINE_SLOTS: usize = 4;
/// Marks an empty baseline slot.
const EMPTY_SLOT: u32 = u32::MAX;

/// The configuration compiled for the per-request path. Built once per configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    min_limit: u32,
    initial_limit: u32,
    max_limit: u32,
    window_nanos: u64,
    window_min_samples: u32,
    window_max_samples: u32,
    latency_quantile: f64,
    tolerance: f64,
    utilization: f64,
    baseline_slot_nanos: u64,
    baseline_window_nanos: u64,
    latency_target_micros: Option<u64>,
    max_decrease: f64,
    dry_run: bool,
    shares: [u64; Rank::COUNT],
}

impl Policy {
    /// Compiles a configuration. Expects a validated configuration but stays well-defined
    /// (clamping) for any input.
    pub fn new(config: &ShedderConfig) -> Policy {
        let limit = &config.limit;
        let min_limit = limit.min_limit.max(1);
        let max_limit = limit.max_limit.max(min_limit);
        // Window sample counts must fit the histogram's u16 buckets, or a window could never fill.
        let max_samples = u32::from(u16::MAX);
        let window_min_samples = limit.window_min_samples.clamp(1, max_samples);
        let shares = &config.criticality.shares;
        // Share of each criticality, least important first.
        let by_criticality = [
            shares.sheddable,
            shares.sheddable_plus,
            shares.critical,
            shares.critical_plus,
        ]
        .map(|share| (share.get() * SHARE_ONE as f64).round() as u64);
        let mut rank_shares = [0; Rank::COUNT];
        for (criticality, &share) in by_criticality.iter().enumerate() {
            let lower = criticality
                .checked_sub(1)
                .map_or(0, |lower| by_criticality[lower]);
            rank_shares[criticality * 2] = (share + lower) / 2;
            rank_shares[criticality * 2 + 1] = share;
        }
        Policy {
            min_limit,
            initial_limit: limit.initial_limit.max(min_limit).min(max_limit),
            max_limit,
            window_nanos: millis_to_nanos(limit.window_ms.as_millis()).max(1),
            window_min_samples,
            window_max_samples: limit
                .window_max_samples
                .clamp(window_min_samples, max_samples),
            latency_quantile: limit.latency_quantile.get(),
            tolerance: limit.tolerance.get(),
            utilization: limit.utilization.get().max(f64::MIN_POSITIVE),
            // Slots of a third of the window: the oldest of four slots still covers the window.
            baseline_window_nanos: millis_to_nanos(limit.baseline_window_ms.as_millis()).max(1),
            baseline_slot_nanos: millis_to_nanos(limit.baseline_window_ms.as_millis())
                .div_ceil(BASELINE_SLOTS as u64 - 1)
                .max(1),
            latency_target_micros: limit
                .latency_target_ms
                .map(|target| target.as_millis().saturating_mul(1_000)),
            max_decrease: limit.max_decrease.get().min(MAX_DECREASE_CEILING),
            dry_run: config.dry_run,
            shares: rank_shares,
        }
    }

    /// The in-flight count below which a request of `rank` is admitted under `limit`: its
    /// share of the limit, rounded to the nearest count, at least 1.
    fn threshold(&self, limit: u32, rank: Rank) -> u32 {
        let scaled = (u64::from(limit) * self.shares[rank.index()] + SHARE_ONE / 2) / SHARE_ONE;
        u32::try_from(scaled).unwrap_or(u32::MAX).max(1)
    }

    fn clamp_limit(&self, limit: u32) -> u32 {
        limit.max(self.min_limit).min(self.max_limit)
    }
}

/// The admission decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Admission {
    /// Admitted and counted: call [`SharedState::release`] exactly once when it ends.
    Admitted,
    /// Dry run: would have been shed, but is admitted and counted like [`Admission::Admitted`].
    WouldShed,
    /// Refused: reply with the rejection; not counted, so never released.
    Shed,
}

impl Admission {
    /// Whether the request proceeds (and must be released).
    pub fn is_admitted(self) -> bool {
        !matches!(self, Admission::Shed)
    }
}

/// How an admitted request ended: the filter kit's outcome.
pub use meshkit::kit::Outcome;

/// What closing a measurement window did to the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowClosed {
    /// The limit before the update.
    pub previous_limit: u32,
    /// The limit after the update.
    pub limit: u32,
    /// The window's latency (its `latency_quantile`).
    pub latency: Duration,
    /// The no-load latency the window was compared with.
    pub baseline: Duration,
    /// Latency samples in the window.
    pub samples: u32,
    /// Requests that ended in the window (samples or not): with `duration`, its throughput.
    pub released: u32,
    /// How long the window was open.
    pub duration: Duration,
    /// What the window did to the limit.
    pub action: LimitAction,
}

/// What closing a window did to the limit, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitAction {
    /// The window used the limit with latency in tolerance: the limit grew (unless at
    /// `max_limit`).
    Grow,
    /// Nothing called for a change.
    Hold,
    /// Queueing, or latency over the target: the limit was cut (unless it could not fall).
    Cut,
    /// A latency known not to be caused by the limit expired: one cut tests it again.
    Retest,
    /// The previous cut did not lower latency: the cut was undone and that latency taken as
    /// not caused by our concurrency.
    UndoCut,
}

/// The state every worker shares: in-flight count, limit, the open window, the baseline, the
/// cut being verified and the latency known not to be queueing.
/// Fixed size ([`SharedState::ENCODED_LEN`] bytes), stored in one shared-data cell and updated
/// by compare-and-swap: read, apply [`SharedState::admit`] or [`SharedState::release`] to the
/// decoded copy, write back with the read CAS, retry on mismatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedState {
    in_flight: u32,
    limit: u32,
    /// No window has cut the limit yet.
    slow_start: bool,
    window_start_nanos: u64,
    window_peak_in_flight: u32,
    /// The window refused a request (or would have, in dry run).
    window_refused: bool,
    /// Slow start only: the limit before the window doubled it on demand; 0 if it did not.
    window_grown_from: u32,
    /// Requests the window saw end (its throughput, with its duration).
    window_releases: u32,
    window_latency: LatencyHistogram,
    baseline: BaselineFilter,
    /// The last cut, until the window that judges it closes.
    pending_cut: Option<PendingCut>,
    /// Latency a cut failed to lower, so not caused by our concurrency.
    unqueued: Option<Unqueued>,
    /// The last closed window's latency (µs) if it showed queueing, else 0.
    queueing_micros: u32,
}

/// A cut whose effect the next window measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingCut {
    /// The limit before the cut.
    from: u32,
    /// The latency of the window that cut (µs).
    latency_micros: u32,
    /// When the cut happened: only requests admitted after it measure its effect.
    at_nanos: u64,
    /// Requests that ended in the window that cut, and its duration: its throughput.
    releases: u32,
    duration_nanos: u64,
    /// The cut re-tests an expired unqueued latency.
    retest: bool,
    /// One window already found the cut did not work; the next one decides.
    struck: bool,
}

/// A latency shown not to be queueing caused by our concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unqueued {
    micros: u32,
    /// When it must be shown again (time of the failed cut plus `baseline_window_ms`).
    until_nanos: u64,
}

impl SharedState {
    /// Layout version, the first encoded byte; bumped on any layout change.
    pub const FORMAT_VERSION: u8 = 2;
    /// Size of the encoding in bytes.
    pub const ENCODED_LEN: usize = 2
        + 4 * 4
        + 8
        + 4
        + (4 + 4 + 8 + 4 + 8)
        + (4 + 8)
        + 4
        + BaselineFilter::ENCODED_LEN
        + histogram::ENCODED_LEN;

    /// A fresh state: nothing in flight, the initial limit, a window opening at `now`.
    pub fn new(policy: &Policy, now: Timestamp) -> SharedState {
        SharedState {
            in_flight: 0,
            limit: policy.initial_limit,
            slow_start: true,
            window_start_nanos: now.as_nanos(),
            window_peak_in_flight: 0,
            window_refused: false,
            window_grown_from: 0,
            window_releases: 0,
            window_latency: LatencyHistogram::default(),
            baseline: BaselineFilter::default(),
            pending_cut: None,
            unqueued: None,
            queueing_micros: 0,
        }
    }

    /// Requests admitted and not yet released, across all workers.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// The current concurrency limit under `policy` (always within `[min_limit, max_limit]`).
    pub fn limit(&self, policy: &Policy) -> u32 {
        policy.clamp_limit(self.limit)
    }

    /// The no-load latency the next window is compared with, once a window has closed: the
    /// smallest recent window latency, or the latency a cut failed to lower if that is higher.
    pub fn baseline(&self) -> Option<Duration> {
        self.baseline
            .min()
            .map(|micros| micros.max(self.unqueued.map_or(0, |u| u.micros)))
            .map(|micros| Duration::from_micros(u64::from(micros)))
    }

    /// Whether no window has cut the limit yet (see the module doc).
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// Decides whether a request of `rank` may start, and counts it if so.
    pub fn admit(&mut self, policy: &Policy, rank: Rank) -> Admission {
        let mut threshold = self.threshold(policy, rank);
        let limit = self.limit(policy);
        if self.in_flight >= threshold
            && self.slow_start
            && self.window_grown_from == 0
            && self.queueing_micros == 0
            && limit < policy.max_limit
        {
            // Slow start meets demand: grow now rather than refuse, once per window; the
            // window's latency judges the growth.
            self.window_grown_from = limit;
            self.limit = policy.clamp_limit(limit.saturating_mul(2));
            threshold = self.threshold(policy, rank);
        }
        let decision = if self.in_flight < threshold {
            Admission::Admitted
        } else {
            // Only whether the window refused anything matters. Leaving the state unchanged
            // after the first refusal lets the glue skip the shared-data write for every
            // further refusal, which is most requests under overload.
            self.window_refused = true;
            if !policy.dry_run {
                return Admission::Shed;
            }
            Admission::WouldShed
        };
        self.in_flight = self.in_flight.saturating_add(1);
        self.window_peak_in_flight = self.window_peak_in_flight.max(self.in_flight);
        decision
    }

    /// The in-flight count below which a request of `rank` is admitted: its share of the limit;
    /// in slow start its share of twice the limit (at most `max_limit`).
    fn threshold(&self, policy: &Policy, rank: Rank) -> u32 {
        let limit = self.limit(policy);
        if self.slow_start {
            let ahead = limit.saturating_mul(2).min(policy.max_limit);
            policy.threshold(ahead, rank)
        } else {
            policy.threshold(limit, rank)
        }
    }

    /// Ends an admitted request that took `latency` and ended with `outcome`; closes the window
    /// and updates the limit when the window is due (see the module doc). A zero latency is no
    /// sample: only a clock stepping back between admission and release produces one.
    pub fn release(
        &mut self,
        policy: &Policy,
        now: Timestamp,
        latency: Duration,
        outcome: Outcome,
    ) -> Option<WindowClosed> {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.window_releases = self.window_releases.saturating_add(1);
        let now = now.as_nanos();
        if now.saturating_add(policy.window_nanos) < self.window_start_nanos {
            self.clock_stepped_back(policy, now);
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let admitted_at = now.saturating_sub(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        let plausible = micros > 0;
        let measures_cut = self
            .pending_cut
            .is_none_or(|cut| admitted_at >= cut.at_nanos);
        let sampled = plausible
            && measures_cut
            && match outcome {
                Outcome::Success => true,
                Outcome::Error | Outcome::Reset | Outcome::LocalReply => self
                    .baseline
                    .min()
                    .is_some_and(|baseline| micros >= u64::from(baseline)),
            };
        if sampled {
            self.window_latency.record(micros);
        }
        let samples = self.window_latency.count();
        let age = now.saturating_sub(self.window_start_nanos);
        // The first window closes once the first `initial_limit` requests' worth of samples is
        // in: they started on an idle service, so they measure the no-load latency even when a
        // flood arrives with the first request.
        let first = self.baseline.min().is_none() && samples >= policy.initial_limit;
        let due = first
            || samples >= policy.window_max_samples
            || (samples >= policy.window_min_samples && age >= policy.window_nanos);
        if due {
            self.close_window(policy, now)
        } else {
            None
        }
    }

    /// The clock jumped back by more than a window: restart every time reference at `now` so
    /// windows keep closing and a cut keeps being judged.
    fn clock_stepped_back(&mut self, policy: &Policy, now: u64) {
        self.window_start_nanos = now;
        if let Some(cut) = &mut self.pending_cut {
            cut.at_nanos = cut.at_nanos.min(now);
        }
        if let Some(unqueued) = &mut self.unqueued {
            unqueued.until_nanos = unqueued
                .until_nanos
                .min(now.saturating_add(policy.baseline_window_nanos));
        }
        self.baseline.restart_at(now, policy.baseline_slot_nanos);
    }

    fn close_window(&mut self, policy: &Policy, now: u64) -> Option<WindowClosed> {
        let samples = self.window_latency.count();
        let observed = self.window_latency.quantile(policy.latency_quantile);
        let peak = self.window_peak_in_flight;
        let refused = self.window_refused;
        let grown_from = self.window_grown_from;
        let releases = self.window_releases;
        let duration_nanos = now.saturating_sub(self.window_start_nanos).max(1);
        self.window_start_nanos = now;
        self.window_releases = 0;
        self.window_peak_in_flight = self.in_flight;
        self.window_refused = false;
        self.window_grown_from = 0;
        self.window_latency.clear();
        let observed = observed?;
        let observed_micros = u32::try_from(observed)
            .unwrap_or(EMPTY_SLOT - 1)
            .min(EMPTY_SLOT - 1);

        self.baseline
            .observe(now, policy.baseline_slot_nanos, observed);
        // An expired unqueued latency is dropped once latency is back within tolerance of the
        // smallest recent window latency; otherwise the next cut re-tests it.
        let mut retest = false;
        if self.unqueued.is_some_and(|u| now >= u.until_nanos) {
            let normal = self
                .baseline
                .min()
                .is_some_and(|min| observed as f64 <= (1.0 + policy.tolerance) * f64::from(min));
            if normal {
                self.unqueued = None;
            } else {
                retest = self.pending_cut.is_none();
            }
        }
        let baseline = self
            .baseline()
            .map_or(u64::from(EMPTY_SLOT - 1), |b| {
                u64::try_from(b.as_micros()).unwrap_or(u64::MAX)
            })
            .max(1);
        let previous_limit = self.limit(policy);
        // Demand met the limit: a refusal, an on-demand growth, or a high enough peak.
        let in_use = refused
            || grown_from > 0
            || f64::from(peak) >= policy.utilization * f64::from(previous_limit);
        let renewed = |micros| Unqueued {
            micros,
            until_nanos: now.saturating_add(policy.baseline_window_nanos),
        };
        let closed = |limit, action| {
            Some(WindowClosed {
                previous_limit,
                limit,
                latency: Duration::from_micros(observed),
                baseline: Duration::from_micros(baseline),
                samples,
                released: releases,
                duration: Duration::from_nanos(duration_nanos),
                action,
            })
        };

        if let Some(cut) = self.pending_cut.take() {
            // The cut kept `kept` of the limit. Had the latency been queueing our concurrency
            // causes, it would have fallen about as much while the throughput held (the service
            // was the bottleneck). If the latency fell by less than half of that and is still
            // not within tolerance, while the throughput fell by more than half as much (our
            // limit was the bottleneck), in two windows, it was not queueing.
            let kept = f64::from(previous_limit) / f64::from(cut.from.max(1));
            let midway = (1.0 + kept) / 2.0;
            // A re-test asks whether latency is back to normal: the smallest recent window
            // latency is then what it is compared with.
            let normal = if cut.retest {
                self.baseline.min().map_or(baseline, u64::from)
            } else {
                baseline
            };
            let latency_held = observed as f64 >= f64::from(cut.latency_micros) * midway
                && observed as f64 > (1.0 + policy.tolerance) * normal as f64;
            let throughput_fell = f64::from(releases) * (cut.duration_nanos as f64)
                < f64::from(cut.releases) * (duration_nanos as f64) * midway;
            if latency_held && throughput_fell {
                if !cut.struck {
                    // One window can mislead (noise, a burst, requests from before the cut
                    // still ending): the next one judges again.
                    self.pending_cut = Some(PendingCut {
                        struck: true,
                        ..cut
                    });
                    return closed(previous_limit, LimitAction::Hold);
                }
                self.queueing_micros = 0;
                self.unqueued = Some(renewed(cut.latency_micros));
                self.limit = policy.clamp_limit(cut.from.max(previous_limit));
                return closed(self.limit, LimitAction::UndoCut);
            }
            if cut.retest {
                // Queueing was ours after all: the latency at the lower limit is the no-load
                // latency under the present conditions.
                let lower = self
                    .unqueued
                    .map_or(observed_micros, |u| u.micros.min(observed_micros));
                self.unqueued = Some(renewed(lower));
            }
        } else if retest {
            // Re-test the expired unqueued latency with the largest cut, if the limit binds.
            let cut = policy.clamp_limit((f64::from(previous_limit) * policy.max_decrease) as u32);
            if in_use && cut < previous_limit {
                self.pending_cut = Some(PendingCut {
                    from: previous_limit,
                    latency_micros: observed_micros,
                    at_nanos: now,
                    releases,
                    duration_nanos,
                    retest: true,
                    struck: false,
                });
                self.queueing_micros = 0;
                self.slow_start = false;
                self.limit = cut;
                return closed(cut, LimitAction::Retest);
            }
            self.unqueued = Some(renewed(observed_micros));
        }

        let ratio = observed as f64 / baseline as f64;
        let queueing = ratio > 1.0 + policy.tolerance;
        // Once a cut failed, latency is known to vary for reasons other than our concurrency,
        // and a single slow window is as likely the host's as queueing: then only the second
        // queueing window in a row cuts, and the lower of the two is what the cut must lower.
        let persistent = if self.queueing_micros > 0 {
            queueing.then_some(self.queueing_micros.min(observed_micros))
        } else {
            (queueing && self.unqueued.is_none()).then_some(observed_micros)
        };
        self.queueing_micros = if queueing { observed_micros } else { 0 };
        let over_target = policy
            .latency_target_micros
            .filter(|&target| observed > target);
        let mut factor = 1.0f64;
        if persistent.is_some() {
            factor = factor.min(1.0 / ratio);
        }
        if let Some(target) = over_target {
            factor = factor.min(target as f64 / observed as f64);
        }
        let (limit, action) = if factor < 1.0 {
            // A slow-start window that grew on demand and then queued takes the growth back.
            let from = if self.slow_start && grown_from > 0 {
                grown_from.min(previous_limit)
            } else {
                previous_limit
            };
            self.slow_start = false;
            let factor = factor.clamp(policy.max_decrease, MAX_DECREASE_CEILING);
            let decreased = (f64::from(from) * factor) as u32;
            let limit = if in_use {
                decreased
            } else {
                // Not in use: shrink towards the demand seen, not below it.
                let demand = if over_target.is_some() {
                    peak
                } else {
                    (f64::from(peak) / policy.utilization).ceil() as u32
                };
                decreased.max(demand).min(previous_limit)
            };
            let limit = policy.clamp_limit(limit);
            if let (None, Some(reference)) = (over_target, persistent) {
                if limit < previous_limit {
                    self.pending_cut = Some(PendingCut {
                        from: previous_limit,
                        latency_micros: reference,
                        at_nanos: now,
                        releases,
                        duration_nanos,
                        retest: false,
                        struck: false,
                    });
                } else {
                    // The limit cannot fall (floor, or demand above it): no cut can lower this
                    // latency.
                    self.unqueued = Some(renewed(observed_micros));
                }
            }
            (limit, LimitAction::Cut)
        } else if queueing {
            (previous_limit, LimitAction::Hold)
        } else if in_use {
            let limit = if self.slow_start {
                previous_limit.saturating_mul(2)
            } else {
                let step = (f64::from(previous_limit).sqrt() as u32).max(1);
                previous_limit.saturating_add(step)
            };
            (limit, LimitAction::Grow)
        } else {
            (previous_limit, LimitAction::Hold)
        };
        self.limit = policy.clamp_limit(limit);
        closed(self.limit, action)
    }
}

impl SharedValue for SharedState {
    /// Layout (little-endian): version u8, flags u8 (bit 0: slow start, bit 1: window
    /// refused, bit 2: the pending cut is a re-test, bit 3: it has a strike), in_flight u32, limit u32, window peak u32, window grown-from u32, window
    /// releases u32, window start u64 (ns), pending cut (from u32, 0 = none; latency u32 µs;
    /// at u64 ns; its window's releases u32 and duration u64 ns), unqueued
    /// latency u32 µs (`u32::MAX` = none) and its expiry u64 ns, the last window's queueing
    /// latency u32 µs (0 = none), baseline newest slot u64 + 4 × u32 minima (µs, `u32::MAX` =
    /// empty), then the window histogram.
    fn encode(&self) -> Vec<u8> {
        let mut out = ByteWriter::with_capacity(Self::ENCODED_LEN);
        out.u8(Self::FORMAT_VERSION)
            .u8(u8::from(self.slow_start)
                | u8::from(self.window_refused) << 1
                | u8::from(self.pending_cut.is_some_and(|cut| cut.retest)) << 2
                | u8::from(self.pending_cut.is_some_and(|cut| cut.struck)) << 3)
            .u32(self.in_flight)
            .u32(self.limit)
            .u32(self.window_peak_in_flight)
            .u32(self.window_grown_from)
            .u32(self.window_releases)
            .u64(self.window_start_nanos);
        let cut = self.pending_cut.unwrap_or(PendingCut {
            from: 0,
            latency_micros: 0,
            at_nanos: 0,
            releases: 0,
            duration_nanos: 0,
            retest: false,
            struck: false,
        });
        out.u32(cut.from)
            .u32(cut.latency_micros)
            .u64(cut.at_nanos)
            .u32(cut.releases)
            .u64(cut.duration_nanos);
        let unqueued = self.unqueued.unwrap_or(Unqueued {
            micros: EMPTY_SLOT,
            until_nanos: 0,
        });
        out.u32(unqueued.micros)
            .u64(unqueued.until_nanos)
            .u32(self.queueing_micros)
            .u64(self.baseline.newest_slot);
        for minimum in self.baseline.minima {
            out.u32(minimum);
        }
        self.window_latency.encode_into(&mut out);
        out.into_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let what = "load-shedder SharedState";
        let mut input = ByteReader::new(bytes, what);
        let version = input.u8()?;
        if version != Self::FORMAT_VERSION {
            return Err(DecodeError::new(
                what,
                format!("unknown format version {version}"),
            ));
        }
        let flags = input.u8()?;
        if flags > 0b1111 {
            return Err(DecodeError::new(
                what,
                format!("unknown flags {flags:#04x}"),
            ));
        }
        let in_flight = input.u32()?;
        let limit = input.u32()?;
        let window_peak_in_flight = input.u32()?;
        let window_grown_from = input.u32()?;
        let window_releases = input.u32()?;
        let window_start_nanos = input.u64()?;
        let cut = PendingCut {
            from: input.u32()?,
            latency_micros: input.u32()?,
            at_nanos: input.u64()?,
            releases: input.u32()?,
            duration_nanos: input.u64()?,
            retest: flags & 4 != 0,
            struck: flags & 8 != 0,
        };
        let unqueued = Unqueued {
            micros: input.u32()?,
            until_nanos: input.u64()?,
        };
        let queueing_micros = input.u32()?;
        let newest_slot = input.u64()?;
        let mut minima = [EMPTY_SLOT; BASELINE_SLOTS];
        for minimum in &mut minima {
            *minimum = input.u32()?;
        }
        let window_latency = LatencyHistogram::decode(&mut input)?;
        input.finish()?;
        Ok(SharedState {
            in_flight,
            limit,
            slow_start: flags & 1 != 0,
            window_start_nanos,
            window_peak_in_flight,
            window_refused: flags & 2 != 0,
            window_grown_from,
            window_releases,
            window_latency,
            baseline: BaselineFilter {
                newest_slot,
                minima,
            },
            pending_cut: (cut.from != 0).then_some(cut),
            unqueued: (unqueued.micros != EMPTY_SLOT).then_some(unqueued),
            queueing_micros,
        })
    }
}

/// The smallest window latency of the recent past: one minimum per time slot, four slots.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BaselineFilter {
    /// Index (time / slot length) of the newest slot written.
    newest_slot: u64,
    /// Minimum latency in µs per slot, indexed by slot index modulo 4; `EMPTY_SLOT` if none.
    minima: [u32; BASELINE_SLOTS],
}

impl Default for BaselineFilter {
    fn default() -> Self {
        Self {
            newest_slot: 0,
            minima: [EMPTY_SLOT; BASELINE_SLOTS],
        }
    }
}

impl BaselineFilter {
    const ENCODED_LEN: usize = 8 + 4 * BASELINE_SLOTS;

    /// Records a window latency at `now`, first expiring slots older than four slot lengths.
    /// A timestamp older than the newest slot (another worker's clock) counts as the newest.
    fn observe(&mut self, now_nanos: u64, slot_nanos: u64, micros: u64) {
        let slot = now_nanos / slot_nanos;
        if slot > self.newest_slot {
            let gap = slot - self.newest_slot;
            if gap >= BASELINE_SLOTS as u64 {
                self.minima = [EMPTY_SLOT; BASELINE_SLOTS];
            } else {
                for expired in self.newest_slot + 1..=slot {
                    self.minima[(expired % BASELINE_SLOTS as u64) as usize] = EMPTY_SLOT;
                }
            }
            self.newest_slot = slot;
        }
        let index = (self.newest_slot % BASELINE_SLOTS as u64) as usize;
        let micros = u32::try_from(micros)
            .unwrap_or(EMPTY_SLOT - 1)
            .min(EMPTY_SLOT - 1);
        self.minima[index] = self.minima[index].min(micros);
    }

    /// After the clock stepped back to `now_nanos`: the newest slot becomes `now`'s, keeping the
    /// minima, so slots expire again as time passes.
    fn restart_at(&mut self, now_nanos: u64, slot_nanos: u64) {
        self.newest_slot = self.newest_slot.min(now_nanos / slot_nanos);
    }

    fn min(&self) -> Option<u32> {
        self.minima
            .iter()
            .copied()
            .filter(|&m| m != EMPTY_SLOT)
            .min()
    }
}

fn millis_to_nanos(millis: u64) -> u64 {
    millis.saturating_mul(1_000_000)
}
