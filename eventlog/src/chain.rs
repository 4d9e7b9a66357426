//! Chained appends: several appends to one stream in flight at once, each decided on
//! the state the one before it leaves.
//!
//! A hot stream's commands are serialized (one writer per stream), so without help
//! each one waits for the previous one's commit before it can even be decided, and
//! the stream gets one command per commit however many callers are queued. A chain
//! lets the command side decide the next command on the state *as if* the previous
//! append had already committed, and queue it right behind: both land in the same
//! group commit.
//!
//! That is only sound if an append decided on an earlier one's outcome never lands
//! without it. The expected version alone does not prove that: if the earlier append
//! fails because another process wrote first, the stream reaches the later append's
//! expected version through the *other* writer's events, which the later decision
//! never saw. So the store keeps one more rule for chained appends:
//!
//! **A chained append runs only if every earlier append of its chain succeeded.**
//! Otherwise it fails with [`StoreError::EarlierAppendFailed`](crate::StoreError)
//! without running, and the chain stays broken: every later append of it fails the
//! same way. The caller starts a new chain from state it read back from the store.
//!
//! Each store keeps the rule where its appends run: the SQLite writer checks the chain
//! before each append of a batch; the PostgreSQL writer checks it before a batch is
//! sent, and inside a batch `tidemark_append_batch` refuses an append whose chain
//! already had an append refused earlier in the same batch (migration 0008, which
//! gets each request's chain id).
//!
//! The chain also tells the command side how far its appends are confirmed
//! ([`AppendChain::settled`]), so that it answers nothing that depends on an
//! unconfirmed append (a rejection, a read of the state, a snapshot) before it knows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::Version;

/// How far a chain's appends are known to have landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainProgress {
    /// Every append so far that has an outcome succeeded; the stream's version after
    /// the newest of them.
    Confirmed(Version),
    /// An append of the chain failed (or was dropped without running): nothing queued
    /// after it will run.
    Broken,
}

/// The appends one caller queued to one stream, each decided on the one before.
#[derive(Debug)]
pub struct AppendChain {
    /// Unique in this process, so a batch can tell its chains apart.
    id: u64,
    progress: watch::Sender<ChainProgress>,
}

/// The id of the next chain made in this process.
static NEXT_CHAIN: AtomicU64 = AtomicU64::new(1);

/// The chain broke before the version asked about was confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an earlier append of the chain failed")]
pub struct ChainBroken;

impl AppendChain {
    /// A chain that starts on a stream whose state is known up to `version`.
    pub fn new(version: Version) -> Arc<Self> {
        Arc::new(Self {
            id: NEXT_CHAIN.fetch_add(1, Ordering::Relaxed),
            progress: watch::Sender::new(ChainProgress::Confirmed(version)),
        })
    }

    pub fn progress(&self) -> ChainProgress {
        *self.progress.borrow()
    }

    pub fn is_broken(&self) -> bool {
        self.progress() == ChainProgress::Broken
    }

    /// Waits until the chain's appends are confirmed up to stream version `version`,
    /// or until it breaks.
    pub async fn settled(&self, version: Version) -> Result<(), ChainBroken> {
        let mut progress = self.progress.subscribe();
        // The sender lives in `self`, so the wait cannot see it closed.
        let seen = progress
            .wait_for(|p| match p {
                ChainProgress::Confirmed(at) => *at >= version,
                ChainProgress::Broken => true,
            })
            .await
            .map(|p| *p)
            .unwrap_or(ChainProgress::Broken);
        match seen {
            ChainProgress::Confirmed(_) => Ok(()),
            ChainProgress::Broken => Err(ChainBroken),
        }
    }

    fn confirm(&self, version: Version) {
        self.progress.send_if_modified(|p| match p {
            ChainProgress::Confirmed(at) if *at < version => {
                *at = version;
                true
            }
            _ => false,
        });
    }

    fn break_off(&self) {
        self.progress.send_if_modified(|p| {
            let changed = *p != ChainProgress::Broken;
            *p = ChainProgress::Broken;
            changed
        });
    }
}

/// One queued append's place in its chain. Dropped without [`Link::confirm`], it
/// breaks the chain: whatever way an append ends other than a commit (a refusal, a
/// failed batch, a caller that stopped waiting, a store shutting down) leaves nothing
/// later in the chain to run.
#[derive(Debug)]
pub(crate) struct Link {
    chain: Arc<AppendChain>,
    confirmed: bool,
}

impl Link {
    pub(crate) fn new(chain: Arc<AppendChain>) -> Self {
        Self {
            chain,
            confirmed: false,
        }
    }

    /// The chain's id, unique in this process.
    pub(crate) fn chain_id(&self) -> u64 {
        self.chain.id
    }

    /// Whether an earlier append of the chain already failed: then this one must not run.
    pub(crate) fn is_broken(&self) -> bool {
        self.chain.is_broken()
    }

    /// Breaks the chain now, before the batch this append was part of ends: a later
    /// append of the same chain in the same batch must not run either.
    pub(crate) fn break_off(&self) {
        self.chain.break_off();
    }

    /// The append committed and the stream is at `version`.
    pub(crate) fn confirm(mut self, version: Version) {
        self.confirmed = true;
        self.chain.confirm(version);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if !self.confirmed {
            self.chain.break_off();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn confirming_moves_the_chain_forward_and_never_back() {
        let chain = AppendChain::new(3);
        Link::new(Arc::clone(&chain)).confirm(5);
        Link::new(Arc::clone(&chain)).confirm(4);
        assert_eq!(chain.progress(), ChainProgress::Confirmed(5));
        assert_eq!(chain.settled(5).await, Ok(()));
    }

    #[tokio::test]
    async fn a_link_dropped_unconfirmed_breaks_the_chain_for_good() {
        let chain = AppendChain::new(0);
        drop(Link::new(Arc::clone(&chain)));
        assert!(chain.is_broken());
        Link::new(Arc::clone(&chain)).confirm(9);
        assert_eq!(chain.progress(), ChainProgress::Broken);
        assert_eq!(chain.settled(1).await, Err(ChainBroken));
    }

    #[tokio::test]
    async fn settled_waits_for_the_version_asked_about() {
        let chain = AppendChain::new(0);
        let first = Link::new(Arc::clone(&chain));
        let second = Link::new(Arc::clone(&chain));
        let waiter = tokio::spawn({
            let chain = Arc::clone(&chain);
            async move { chain.settled(2).await }
        });
        first.confirm(1);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "version 2 is not confirmed yet");
        second.confirm(2);
        assert_eq!(waiter.await.expect("the waiter finishes"), Ok(()));
    }
}
