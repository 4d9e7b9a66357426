//! Adapts each domain aggregate to the one generic command loop in [`crate::service`].
//!
//! The domain exposes plain `decide`/`evolve` functions per module; this trait names
//! them, plus the conversions to and from the stored form, so the loop that loads,
//! decides, appends and retries is written once.

use domain::{budget, generation, post};
use schemas::DomainEvent;
use schemas::states::{self, StateDecodeError, StateFormat, StoredState};

/// How an aggregate's state is stored in a snapshot (see `schemas::states`).
///
/// A format with a detail decodes to a state that may lack what the detail holds
/// (`incomplete`); the command loop hands it the detail (`complete`) before a decision
/// that needs it ([`Aggregate::needs_detail`]) and before it encodes the state again.
pub struct Codec<S> {
    /// The stored format: its name and the version snapshots are kept under.
    pub format: StateFormat,
    /// The state's data and detail; `None` for an incomplete state.
    pub encode: fn(&S) -> Option<StoredState>,
    /// A state from a snapshot's data alone.
    pub decode: fn(&str) -> Result<S, StateDecodeError>,
    /// Hands a decoded state its snapshot's detail.
    pub complete: fn(&mut S, &str) -> Result<(), StateDecodeError>,
    /// Whether the state still lacks what its snapshot's detail holds.
    pub incomplete: fn(&S) -> bool,
}

/// A domain aggregate as the command loop sees it.
pub trait Aggregate: Send + Sync + 'static {
    type State: Clone + Default + Send + Sync + 'static;
    type Command: Clone + Send + 'static;
    type Event: Clone + Send + 'static;
    type Ctx: Send + Sync;
    type Rejection: std::error::Error + Send + 'static;

    /// Short name for logs and metrics.
    const NAME: &'static str;

    fn decide(
        state: &Self::State,
        command: Self::Command,
        ctx: &Self::Ctx,
    ) -> Result<Vec<Self::Event>, Self::Rejection>;
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;
    fn wrap(event: Self::Event) -> DomainEvent;
    /// The aggregate's own event, or `None` when a stored event belongs elsewhere
    /// (which would mean a corrupted stream).
    fn unwrap(event: DomainEvent) -> Option<Self::Event>;
    /// How the state is snapshotted, or `None` when the aggregate's streams stay too
    /// short to be worth it.
    fn codec() -> Option<Codec<Self::State>>;
    /// Whether `decide` needs what only the snapshot's detail holds to answer this
    /// command on this state (see [`Codec`]).
    fn needs_detail(state: &Self::State, command: &Self::Command) -> bool {
        let _ = (state, command);
        false
    }
}

/// The monthly budget ledger.
pub struct Budget;

impl Aggregate for Budget {
    type State = budget::State;
    type Command = budget::Command;
    type Event = budget::Event;
    type Ctx = budget::Ctx;
    type Rejection = budget::Rejection;
    const NAME: &'static str = "budget";

    fn decide(
        state: &Self::State,
        command: Self::Command,
        ctx: &Self::Ctx,
    ) -> Result<Vec<Self::Event>, Self::Rejection> {
        budget::decide(state, command, ctx)
    }
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State {
        budget::evolve(state, event)
    }
    fn wrap(event: Self::Event) -> DomainEvent {
        DomainEvent::Budget(event)
    }
    fn unwrap(event: DomainEvent) -> Option<Self::Event> {
        match event {
            DomainEvent::Budget(e) => Some(e),
            _ => None,
        }
    }
    /// A month's ledger grows all month. Its snapshot keeps the settled reservations
    /// in the detail, and a filter of their ids in the data.
    fn codec() -> Option<Codec<Self::State>> {
        Some(Codec {
            format: states::BUDGET_STATE,
            encode: |state| states::encode_budget_state(state).ok(),
            decode: states::decode_budget_state,
            complete: states::list_budget_settled,
            incomplete: |state| !state.settled.is_listed(),
        })
    }
    fn needs_detail(state: &Self::State, command: &Self::Command) -> bool {
        budget::needs_settled_list(state, command)
    }
}

/// A post.
pub struct Post;

impl Aggregate for Post {
    type State = post::State;
    type Command = post::Command;
    type Event = post::Event;
    type Ctx = post::Ctx;
    type Rejection = post::Rejection;
    const NAME: &'static str = "post";

    fn decide(
        state: &Self::State,
        command: Self::Command,
        ctx: &Self::Ctx,
    ) -> Result<Vec<Self::Event>, Self::Rejection> {
        post::decide(state, command, ctx)
    }
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State {
        post::evolve(state, event)
    }
    fn wrap(event: Self::Event) -> DomainEvent {
        DomainEvent::Post(event)
    }
    fn unwrap(event: DomainEvent) -> Option<Self::Event> {
        match event {
            DomainEvent::Post(e) => Some(e),
            _ => None,
        }
    }
    /// A post is short-lived as a rule, but nothing bounds its edits. Its format has
    /// no detail.
    fn codec() -> Option<Codec<Self::State>> {
        Some(Codec {
            format: states::POST_STATE,
            encode: |state| {
                Some(StoredState {
                    data: states::encode_post_state(state),
                    detail: None,
                })
            },
            decode: states::decode_post_state,
            complete: |_, _| Ok(()),
            incomplete: |_| false,
        })
    }
}

/// A content generation.
pub struct Generation;

impl Aggregate for Generation {
    type State = generation::State;
    type Command = generation::Command;
    type Event = generation::Event;
    type Ctx = ();
    type Rejection = generation::Rejection;
    const NAME: &'static str = "generation";

    fn decide(
        state: &Self::State,
        command: Self::Command,
        _: &Self::Ctx,
    ) -> Result<Vec<Self::Event>, Self::Rejection> {
        generation::decide(state, command)
    }
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State {
        generation::evolve(state, event)
    }
    fn wrap(event: Self::Event) -> DomainEvent {
        DomainEvent::Generation(event)
    }
    fn unwrap(event: DomainEvent) -> Option<Self::Event> {
        match event {
            DomainEvent::Generation(e) => Some(e),
            _ => None,
        }
    }
    /// A generation has a handful of events (a few attempts at most).
    fn codec() -> Option<Codec<Self::State>> {
        None
    }
}
