//! The jobs a store's writer task batches, and the answers it owes their callers.
//!
//! Both stores (SQLite and PostgreSQL) run appends the same way: callers queue a
//! [`Job`] with a reply channel; a writer task drains the queue into one
//! transaction; each job's outcome is held as a [`Settled`] until the batch
//! commits, then answered — or, if the commit fails, every caller in the batch hears
//! that nothing of theirs was stored.

use std::sync::Arc;

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::chain::Link;
use crate::{AppendRequest, Appended, IdempotentResponse, Position, Snapshot, StoreError};

/// A write waiting for a writer task, with the channel its caller waits on.
pub(crate) enum Job {
    Append {
        request: AppendRequest,
        reply: oneshot::Sender<Result<Appended, StoreError>>,
        /// The append's place in its chain, for a chained append.
        link: Option<Link>,
    },
    Remember {
        tenant_id: Uuid,
        key: String,
        response: IdempotentResponse,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Stores a snapshot unless a newer one is kept (the SQLite store's writer only).
    SaveSnapshot {
        snapshot: Snapshot,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Deletes every snapshot (the SQLite store's writer only).
    DropSnapshots {
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
}

impl Job {
    /// True when the caller stopped waiting (its future was dropped): nobody would
    /// learn the outcome, so the writer skips the job rather than guess for them.
    pub(crate) fn is_abandoned(&self) -> bool {
        match self {
            Job::Append { reply, .. } => reply.is_closed(),
            Job::Remember { reply, .. } | Job::SaveSnapshot { reply, .. } => reply.is_closed(),
            Job::DropSnapshots { reply } => reply.is_closed(),
        }
    }

    /// True for a chained append whose chain already broke: it must not run.
    pub(crate) fn follows_a_failure(&self) -> bool {
        matches!(self, Job::Append { link: Some(link), .. } if link.is_broken())
    }

    /// Answers a chained append that follows a failure without running it.
    pub(crate) fn refuse_after_failure(self) -> Settled {
        match self {
            Job::Append {
                request,
                reply,
                link,
            } => Settled::Append(
                reply,
                Err(StoreError::EarlierAppendFailed {
                    stream_id: request.stream_id,
                }),
                link,
            ),
            other => other.unrun(),
        }
    }

    /// Turns a job that never ran into a settled one; used only when the batch is
    /// failing anyway, so the placeholder answer is replaced by the batch's error.
    pub(crate) fn unrun(self) -> Settled {
        match self {
            Job::Append { reply, link, .. } => {
                Settled::Append(reply, Err(StoreError::Closed), link)
            }
            Job::Remember { reply, .. } | Job::SaveSnapshot { reply, .. } => {
                Settled::Remember(reply, Err(StoreError::Closed))
            }
            Job::DropSnapshots { reply } => Settled::Dropped(reply, Err(StoreError::Closed)),
        }
    }
}

/// A job that ran inside the open batch transaction, with the answer its caller gets
/// if the batch commits.
pub(crate) enum Settled {
    /// An append, with its place in its chain if it has one: confirmed when the
    /// caller is answered with success, broken otherwise (see `chain`).
    Append(
        oneshot::Sender<Result<Appended, StoreError>>,
        Result<Appended, StoreError>,
        Option<Link>,
    ),
    /// A job answered with whether it stored something: a remembered response or a
    /// saved snapshot.
    Remember(
        oneshot::Sender<Result<bool, StoreError>>,
        Result<bool, StoreError>,
    ),
    Dropped(
        oneshot::Sender<Result<u64, StoreError>>,
        Result<u64, StoreError>,
    ),
}

impl Settled {
    pub(crate) fn is_ok(&self) -> bool {
        match self {
            Settled::Append(_, result, _) => result.is_ok(),
            Settled::Remember(_, result) => result.is_ok(),
            Settled::Dropped(_, result) => result.is_ok(),
        }
    }

    pub(crate) fn last_position(&self) -> Option<Position> {
        match self {
            Settled::Append(_, Ok(appended), _) => Some(appended.last_position),
            _ => None,
        }
    }

    /// Answers the caller after the batch committed.
    pub(crate) fn answer(self) {
        // A send fails only when the caller stopped waiting; nothing is left to tell.
        match self {
            Settled::Append(reply, result, link) => {
                // The chain learns first, so a caller that hears of its append and
                // then asks the chain sees the same outcome. A link not confirmed
                // breaks its chain as it drops here.
                if let (Ok(appended), Some(link)) = (&result, link) {
                    link.confirm(appended.version);
                }
                let _ = reply.send(result);
            }
            Settled::Remember(reply, result) => {
                let _ = reply.send(result);
            }
            Settled::Dropped(reply, result) => {
                let _ = reply.send(result);
            }
        }
    }

    /// Answers the caller with the batch's failure: nothing of its request was stored.
    pub(crate) fn fail(self, cause: &Arc<sqlx::Error>) {
        match self {
            Settled::Append(reply, _, link) => {
                // Dropped unconfirmed before the caller hears: the chain is broken.
                drop(link);
                let _ = reply.send(Err(batch_failed(cause)));
            }
            Settled::Remember(reply, _) => {
                let _ = reply.send(Err(batch_failed(cause)));
            }
            Settled::Dropped(reply, _) => {
                let _ = reply.send(Err(batch_failed(cause)));
            }
        }
    }
}

/// The error every caller in a failed batch gets. `sqlx::Error` cannot be cloned, so
/// each caller gets an I/O error whose source is the one shared cause.
fn batch_failed(cause: &Arc<sqlx::Error>) -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::other(BatchFailed(
        Arc::clone(cause),
    ))))
}

#[derive(Debug, thiserror::Error)]
#[error("the group commit this request was part of failed; nothing of it was stored")]
struct BatchFailed(#[source] Arc<sqlx::Error>);
