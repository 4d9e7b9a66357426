//! `scripts/tansu-postgres.sql`, the tables `scripts/kafka start --postgres` makes for
//! the Kafka-API broker's PostgreSQL storage: a statement that deletes records
//! (retention, compaction) deletes their headers with it, and applying the file again
//! (`start` does, every time) upgrades a database the previous version made.
//!
//! Runs against `TIDEMARK_TEST_DATABASE_URL`, in a database of its own.

use std::path::PathBuf;

use eventlog::postgres::testing::TestDatabase;
use sqlx::{Connection, PgConnection};

fn schema() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/tansu-postgres.sql");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path:?} failed: {e}"))
}

/// Applies the file as `start` does: in one transaction.
async fn apply(conn: &mut PgConnection) {
    let mut tx = conn.begin().await.expect("a transaction starts");
    sqlx::raw_sql(&schema())
        .execute(&mut *tx)
        .await
        .expect("the schema applies");
    tx.commit().await.expect("the schema commits");
}

/// A database of its own with the file applied, and a connection to it as its owner.
async fn database_with_the_schema() -> (TestDatabase, PgConnection) {
    let db = TestDatabase::create().await;
    let mut conn = PgConnection::connect_with(&db.owner_options())
        .await
        .expect("the owner connects");
    apply(&mut conn).await;
    (db, conn)
}

/// One partition with `records` records of `headers` headers each; its id.
async fn partition_with_records(conn: &mut PgConnection, records: i64, headers: i64) -> i32 {
    let topition: i32 = sqlx::query_scalar(
        "WITH c AS (INSERT INTO cluster (name) VALUES ('tidemark') RETURNING id), \
              t AS (INSERT INTO topic (cluster, name, uuid, partitions, replication_factor) \
                    SELECT id, 'tidemark.events', gen_random_uuid(), 1, 1 FROM c RETURNING id) \
         INSERT INTO topition (topic, partition) SELECT id, 0 FROM t RETURNING id",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("a partition is made");
    sqlx::query(
        "INSERT INTO record (topition, offset_id, k, v) \
         SELECT $1, o, 'key', 'value' FROM generate_series(0, $2 - 1) AS o",
    )
    .bind(topition)
    .bind(records)
    .execute(&mut *conn)
    .await
    .expect("records are written");
    sqlx::query(
        "INSERT INTO header (topition, offset_id, k, v) \
         SELECT $1, o, convert_to('h' || h, 'UTF8'), 'v' \
         FROM generate_series(0, $2 - 1) AS o, generate_series(1, $3) AS h",
    )
    .bind(topition)
    .bind(records)
    .bind(headers)
    .execute(&mut *conn)
    .await
    .expect("headers are written");
    topition
}

/// Headers per offset of the partition, in offset order.
async fn headers_per_record(conn: &mut PgConnection, topition: i32) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT offset_id, count(*) FROM header WHERE topition = $1 \
         GROUP BY offset_id ORDER BY offset_id",
    )
    .bind(topition)
    .fetch_all(&mut *conn)
    .await
    .expect("headers are readable")
}

#[tokio::test]
async fn deleting_records_deletes_their_headers_and_no_others() {
    let (db, mut conn) = database_with_the_schema().await;
    apply(&mut conn).await;
    let topition = partition_with_records(&mut conn, 4, 8).await;

    // What retention does: delete the oldest records, by record alone.
    let deleted = sqlx::query("DELETE FROM record WHERE topition = $1 AND offset_id < 2")
        .bind(topition)
        .execute(&mut conn)
        .await
        .expect("records can be deleted");
    assert_eq!(deleted.rows_affected(), 2);
    assert_eq!(
        headers_per_record(&mut conn, topition).await,
        vec![(2, 8), (3, 8)],
        "the deleted records' headers go with them, the others' stay"
    );
    conn.close().await.ok();
    db.drop_database().await;
}

#[tokio::test]
async fn applying_it_again_drops_the_header_foreign_key_an_earlier_version_made() {
    let (db, mut conn) = database_with_the_schema().await;
    // The key the file made before 2026-12-05, under the name PostgreSQL gave it.
    sqlx::raw_sql(
        "ALTER TABLE header ADD CONSTRAINT header_topition_offset_id_fkey \
         FOREIGN KEY (topition, offset_id) REFERENCES record (topition, offset_id) \
         ON DELETE CASCADE",
    )
    .execute(&mut conn)
    .await
    .expect("the earlier key is added");

    apply(&mut conn).await;
    let keys: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'header'::regclass AND contype = 'f'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("constraints are readable");
    assert_eq!(keys, 0, "the header table keeps no foreign key");

    let topition = partition_with_records(&mut conn, 3, 2).await;
    sqlx::query("DELETE FROM record WHERE topition = $1 AND offset_id = 1")
        .bind(topition)
        .execute(&mut conn)
        .await
        .expect("a record can be deleted");
    assert_eq!(
        headers_per_record(&mut conn, topition).await,
        vec![(0, 2), (2, 2)],
        "the trigger deletes the headers instead"
    );
    conn.close().await.ok();
    db.drop_database().await;
}
