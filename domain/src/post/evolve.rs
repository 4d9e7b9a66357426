//! `evolve` for posts. Never fails.

use super::{DeliveryState, Event, State, Status, Target, status_of};
use crate::ids::Channel;

/// Applies one event to a post's state.
pub fn evolve(mut state: State, event: &Event) -> State {
    match event {
        Event::Created { channels, .. } => {
            state.status = Status::Draft;
            state.targets = channels.iter().cloned().map(Target::new).collect();
        }
        Event::Edited { .. } => {}
        Event::Scheduled { publish_at } => {
            state.status = Status::Scheduled;
            state.publish_at = Some(*publish_at);
        }
        Event::PublishRequested {
            channel: Some(channel),
            ..
        } => {
            if let Some(target) = target_mut(&mut state, Some(channel)) {
                deliver_again(target);
            }
            derive(&mut state);
        }
        Event::PublishRequested { channel: None, .. } => {
            // Every target not delivered starts again; one published (or removed)
            // stays as it is.
            for target in &mut state.targets {
                if matches!(
                    target.delivery,
                    None | Some(DeliveryState::FailedPermanent | DeliveryState::FailedRetryable)
                ) {
                    deliver_again(target);
                }
            }
            derive(&mut state);
        }
        Event::Published {
            channel,
            network_post_id,
            ..
        } => {
            if let Some(target) = target_mut(&mut state, channel.as_ref()) {
                target.delivery = Some(DeliveryState::Published);
                target.network_post_id = Some(network_post_id.clone());
                target.retry_at = None;
            }
            derive(&mut state);
        }
        Event::PublishFailed { channel, .. } => {
            if let Some(target) = target_mut(&mut state, channel.as_ref()) {
                target.delivery = Some(DeliveryState::FailedPermanent);
                target.retry_at = None;
            }
            derive(&mut state);
        }
        Event::Cancelled => state.status = Status::Cancelled,
        Event::DeliveryAttemptStarted {
            channel, attempt, ..
        } => {
            if let Some(target) = target_mut(&mut state, channel.as_ref()) {
                target.delivery = Some(DeliveryState::Publishing);
                target.attempts = *attempt;
                target.retry_at = None;
            }
            derive(&mut state);
        }
        Event::DeliveryAttemptFailed {
            channel, retry_at, ..
        } => {
            if let Some(target) = target_mut(&mut state, channel.as_ref()) {
                target.retry_at = *retry_at;
                target.delivery = Some(match retry_at {
                    Some(_) => DeliveryState::FailedRetryable,
                    None => DeliveryState::FailedPermanent,
                });
            }
            derive(&mut state);
        }
        Event::DeliveryUnconfirmed { channel, .. } => {
            if let Some(target) = target_mut(&mut state, channel.as_ref()) {
                target.delivery = Some(DeliveryState::Unconfirmed);
            }
            derive(&mut state);
        }
        Event::Removed { channel, .. } => {
            if let Some(target) = target_mut(&mut state, channel.as_ref()) {
                target.delivery = Some(DeliveryState::Removed);
            }
            derive(&mut state);
        }
    }
    state
}

/// The target an event names; `None` names the first one. An event naming a channel
/// the post does not have (a corrupted log) changes no target.
fn target_mut<'a>(state: &'a mut State, channel: Option<&Channel>) -> Option<&'a mut Target> {
    match channel {
        Some(channel) => state.targets.iter_mut().find(|t| &t.channel == channel),
        None => state.targets.first_mut(),
    }
}

fn deliver_again(target: &mut Target) {
    target.delivery = Some(DeliveryState::Pending);
    target.retry_at = None;
}

/// Sets the post's status from its targets, once publishing started.
fn derive(state: &mut State) {
    state.status = status_of(state.targets.iter().filter_map(|t| t.delivery));
}
