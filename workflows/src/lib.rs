//! Process managers: the parts of Tidemark that act on their own when time passes or
//! an event asks for it.
//!
//! - [`publisher::Publisher`] delivers posts whose publishing was requested and
//!   records the outcome as events.
//! - [`timers::Timers`] fires what falls due at a time — scheduled posts and expiring
//!   budget reservations — from the `timers` read model, once per tenant, with a
//!   missed-timer sweep at start.
//! - [`generation::Generator`] calls AI providers for requested generations, records
//!   every attempt and settles the budget reservation.
//! - [`networks`] holds the adapters that deliver posts to real networks, with
//!   every failure classified by what a retry would do.
//!
//! They never append events themselves: every effect goes through the command side's
//! [`command_api::CommandService`], so the same rules and concurrency checks apply.

pub mod generation;
pub mod network;
pub mod networks;
pub mod providers;
pub mod publisher;
pub mod timers;

use std::time::Duration;

use tokio::sync::watch;

/// Waits for the next tick or for shutdown; returns false on shutdown.
pub(crate) async fn tick(
    interval: &mut tokio::time::Interval,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = interval.tick() => true,
        _ = shutdown.changed() => !*shutdown.borrow(),
    }
}

/// A ticker that does not try to catch up on ticks missed while a round was slow.
pub(crate) fn interval(every: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}
