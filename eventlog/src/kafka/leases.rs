//! Which member of a group reads which partitions: leases held as PostgreSQL session
//! advisory locks, next to the offsets they guard.
//!
//! The members of a group (the projector processes) share a topic's partitions. Kafka's
//! own group protocol would decide that on the broker; here the read-model database
//! does, because:
//!
//! * it already holds the truth of each partition's progress (the offsets, committed
//!   with the effects), so ownership and progress live in one place;
//! * a lease is a session-level advisory lock on the member's own connection: when the
//!   process dies, even by SIGKILL, the kernel closes its socket, PostgreSQL ends the
//!   session and every lock it held is free at once. No session timeout to wait out,
//!   and no dependence on the broker's group coordinator (tansu 0.6's does not reliably
//!   expire a killed member), so it works the same on any Kafka-API broker.
//!
//! # The protocol
//!
//! Each member holds one *member slot* lock (the lowest free slot number) for as long
//! as its connection lives, so every member can count the live members from
//! `pg_locks`. Each [`PartitionLeases::rebalance`] round, run by the member between
//! two batches, aims at a fair share of `ceil(partitions / members)`:
//!
//! 1. a member holding more than its share unlocks the extra partitions (after the
//!    caller committed everything it applied from them, so their next owner starts
//!    exactly after it);
//! 2. a member holding fewer tries the locks of the partitions it does not hold, until
//!    it has its share.
//!
//! The shares add up to at least the partition count, so once the rounds settle every
//! partition has an owner; when a member joins or dies the others move within a round
//! or two. Two members never hold one partition's lock at once. If a member loses its
//! connection while still running (a network cut), another member may take its
//! partitions before it notices; the offsets, locked and checked in every apply
//! transaction, make the late member's batch change nothing (see `projector::kafka`).
//! A member whose round fails drops its connection, with every lease, and holds no
//! partition until a round succeeds again.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{Connection, PgConnection};

/// Most members one group counts; a member that finds every slot taken holds none and
/// reads no partition.
const MAX_MEMBERS: i32 = 256;

/// The `pg_locks` rows of the granted two-key advisory locks whose first key is `$1`,
/// in this database. A two-key advisory lock shows there as classid = first key,
/// objid = second key, objsubid = 2.
const HELD_IN_FAMILY: &str = "locktype = 'advisory' AND granted AND objsubid = 2 \
     AND classid::bigint = $1 \
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";

/// A member's leases on the partitions of one topic.
pub struct PartitionLeases {
    url: String,
    /// The session whose advisory locks are the leases; `None` after a failure.
    connection: Option<PgConnection>,
    /// First key of the partition locks (the second is the partition number).
    partition_key: i32,
    /// First key of the member-slot locks (the second is the slot number).
    member_key: i32,
    slot: Option<i32>,
    owned: BTreeSet<i32>,
}

impl std::fmt::Debug for PartitionLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never shown.
        f.debug_struct("PartitionLeases")
            .field("connected", &self.connection.is_some())
            .field("slot", &self.slot)
            .field("owned", &self.owned)
            .finish_non_exhaustive()
    }
}

impl PartitionLeases {
    /// Leases for `group` on `topic`, taken through connections to `database_url`.
    /// Nothing is locked before the first [`PartitionLeases::rebalance`].
    pub fn new(database_url: impl Into<String>, group: &str, topic: &str) -> Self {
        Self {
            url: database_url.into(),
            connection: None,
            partition_key: lock_key("partition", group, topic),
            member_key: lock_key("member", group, topic),
            slot: None,
            owned: BTreeSet::new(),
        }
    }

    /// The partitions this member holds.
    pub fn owned(&self) -> &BTreeSet<i32> {
        &self.owned
    }

    /// One round of the protocol (see the module docs) over `partitions` partitions;
    /// returns the partitions this member holds after it. Call it only between batches,
    /// once everything applied so far is committed.
    ///
    /// On an error the connection is dropped and with it every lease: the member holds
    /// nothing until a later round succeeds, and the caller must stop reading.
    pub async fn rebalance(&mut self, partitions: i32) -> Result<&BTreeSet<i32>, sqlx::Error> {
        if let Err(error) = self.round(partitions).await {
            self.drop_connection();
            return Err(error);
        }
        Ok(&self.owned)
    }

    /// Gives every lease back (on a clean shutdown; a crash does the same).
    pub async fn release_all(&mut self) {
        if let Some(connection) = self.connection.take()
            && let Err(error) = connection.close().await
        {
            tracing::debug!(
                error = &error as &dyn std::error::Error,
                "closing the lease connection failed; its locks end with the session"
            );
        }
        self.slot = None;
        self.owned.clear();
    }

    fn drop_connection(&mut self) {
        self.connection = None;
        self.slot = None;
        self.owned.clear();
    }

    async fn round(&mut self, partitions: i32) -> Result<(), sqlx::Error> {
        if self.connection.is_none() {
            self.connection = Some(PgConnection::connect(&self.url).await?);
        }
        let Some(connection) = self.connection.as_mut() else {
            unreachable!("connected above");
        };
        if self.slot.is_none() {
            for slot in 0..MAX_MEMBERS {
                if try_lock(connection, self.member_key, slot).await? {
                    self.slot = Some(slot);
                    break;
                }
            }
            if self.slot.is_none() {
                tracing::warn!(
                    max = MAX_MEMBERS,
                    "every member slot of the group is taken; this member reads nothing"
                );
                return Ok(());
            }
        }
        let members = live_members(connection, self.member_key).await?.max(1);
        let partitions = partitions.max(0);
        let share = usize::try_from((i64::from(partitions) + members - 1) / members).unwrap_or(0);

        while self.owned.len() > share {
            let Some(partition) = self.owned.pop_last() else {
                break;
            };
            unlock(connection, self.partition_key, partition).await?;
            tracing::info!(
                partition,
                members,
                "partition lease given up for a fairer share"
            );
        }
        if self.owned.len() < share && partitions > 0 {
            // Start each member's search at a different place, so joining members do
            // not all race for partition 0.
            let start = self.slot.unwrap_or(0).saturating_mul(share as i32) % partitions;
            for step in 0..partitions {
                if self.owned.len() >= share {
                    break;
                }
                let partition = (start + step) % partitions;
                if self.owned.contains(&partition) {
                    continue;
                }
                if try_lock(connection, self.partition_key, partition).await? {
                    self.owned.insert(partition);
                    tracing::info!(partition, members, "partition lease taken");
                }
            }
        }
        // Leases on partitions past the topic's end (it can only grow) are kept: they
        // cost nothing and are never read.
        Ok(())
    }
}

/// Who holds which partition leases of `group` on `topic` right now, in the database
/// at `database_url`: each holder's PostgreSQL backend pid (the session of one
/// member), with its partitions in order. For `tidemark projections status` and tests.
pub async fn lease_holders(
    database_url: &str,
    group: &str,
    topic: &str,
) -> Result<BTreeMap<i32, Vec<i32>>, sqlx::Error> {
    let mut connection = PgConnection::connect(database_url).await?;
    let rows: Vec<(i32, i64)> = sqlx::query_as(&format!(
        "SELECT pid, objid::bigint FROM pg_locks WHERE {HELD_IN_FAMILY} ORDER BY pid, objid::bigint"
    ))
    .bind(i64::from(lock_key("partition", group, topic)))
    .fetch_all(&mut connection)
    .await?;
    connection.close().await?;
    let mut holders: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (pid, partition) in rows {
        holders
            .entry(pid)
            .or_default()
            .push(i32::try_from(partition).unwrap_or(i32::MAX));
    }
    Ok(holders)
}

/// A positive 31-bit key for the lock family `kind` of `group` on `topic`.
///
/// FNV-1a, spelled out here: the key must be the same in every process and every
/// build that shares the database (std's `DefaultHasher` may change between releases,
/// and two builds disagreeing would let two members hold one partition).
fn lock_key(kind: &str, group: &str, topic: &str) -> i32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in ["tidemark.kafka.lease", kind, group, topic] {
        // A separator that cannot occur in the parts' UTF-8, so ("ab", "c") and
        // ("a", "bc") differ.
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    ((hash ^ (hash >> 32)) & 0x7fff_ffff) as i32
}

async fn try_lock(connection: &mut PgConnection, key: i32, id: i32) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(key)
        .bind(id)
        .fetch_one(connection)
        .await
}

async fn unlock(connection: &mut PgConnection, key: i32, id: i32) -> Result<(), sqlx::Error> {
    let released: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1, $2)")
        .bind(key)
        .bind(id)
        .fetch_one(connection)
        .await?;
    if !released {
        tracing::warn!(
            key,
            id,
            "a lease this member thought it held was not locked"
        );
    }
    Ok(())
}

/// Sessions holding a member slot of the group, in this database.
async fn live_members(connection: &mut PgConnection, member_key: i32) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM pg_locks WHERE {HELD_IN_FAMILY}"
    ))
    .bind(i64::from(member_key))
    .fetch_one(connection)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_positive_stable_and_distinct_per_family_group_and_topic() {
        let a = lock_key("partition", "g", "t");
        assert_eq!(a, lock_key("partition", "g", "t"));
        assert!(a >= 0);
        assert_ne!(a, lock_key("member", "g", "t"));
        assert_ne!(a, lock_key("partition", "g2", "t"));
        assert_ne!(a, lock_key("partition", "g", "t2"));
        assert_ne!(
            lock_key("partition", "ab", "c"),
            lock_key("partition", "a", "bc")
        );
    }

    #[test]
    fn the_lock_key_does_not_change_between_builds() {
        // Members of different builds share the database: a change here would let two
        // of them hold the same partition.
        assert_eq!(
            lock_key("partition", "tidemark-projector", "tidemark.events"),
            912_837_501
        );
    }
}
