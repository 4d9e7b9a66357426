//! Read models written before posts had several targets and before timers upgrade in
//! place: migration 0006 moves each post's delivery to its one target, 0007 sets the
//! timers of what was scheduled or open, and the queries answer as if the models had
//! been built with them — so an upgraded deployment needs no rebuild.

use chrono::{DateTime, TimeZone, Utc};
use projector::{ReadModels, TimerCursor, TimerKind};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tempfile::TempDir;
use uuid::Uuid;

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, day, hour, 0, 0)
        .single()
        .expect("a valid time")
}

#[tokio::test]
async fn read_models_of_one_target_per_post_keep_their_deliveries_and_gain_their_timers() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("read_models.db");
    let tenant = Uuid::new_v4();
    let [published, removed, scheduled, retrying, draft] = [0; 5].map(|_| Uuid::new_v4());
    let (open, committed) = (Uuid::new_v4(), Uuid::new_v4());

    // The read models as the migrations up to 0005 left them, with rows as the
    // projector of that time wrote them.
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("open SQLite");
    let mut before = sqlx::migrate!("./migrations/sqlite");
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version <= 5)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&pool).await.expect("migrate to 0005");
    let attempt = r#"[{"attempt":1,"network":"mastodon","status":"succeeded","started_at":"2026-02-20T09:00:00.000000Z","ended_at":"2026-02-20T09:00:01.000000Z"}]"#;
    let rows = [
        (
            published,
            "linkedin",
            "published",
            Some("published"),
            Some("n-1"),
            None,
            None,
            1,
            attempt,
        ),
        (
            removed,
            "x",
            "removed",
            Some("published"),
            Some("n-2"),
            None,
            None,
            1,
            "[]",
        ),
        (
            scheduled,
            "blog",
            "scheduled",
            None,
            None,
            None,
            None,
            0,
            "[]",
        ),
        (
            retrying,
            "linkedin",
            "failed_retryable",
            Some("failed_retryable"),
            None,
            Some("2026-02-20T09:05:00.000000Z"),
            Some("503 Service Unavailable"),
            1,
            "[]",
        ),
        (draft, "linkedin", "draft", None, None, None, None, 0, "[]"),
    ];
    for (position, (post, channel, status, state, network_id, next, reason, attempts, list)) in
        rows.into_iter().enumerate()
    {
        sqlx::query(
            "INSERT INTO posts (tenant_id, post_id, channel, body, status, publish_at,
                                network_post_id, failure_reason, delivery_state, network,
                                attempts, next_attempt_at, delivery_attempts, version,
                                created_position, created_at, updated_at)
             VALUES ($1, $2, $3, 'hello', $4, $5, $6, $7, $8, $9, $10, $11, $12, 2, $13,
                     '2026-02-20T08:00:00.000000Z', '2026-02-20T08:00:00.000000Z')",
        )
        .bind(tenant.to_string())
        .bind(post.to_string())
        .bind(channel)
        .bind(status)
        .bind((status == "scheduled").then_some("2026-02-21T09:00:00.000000Z"))
        .bind(network_id)
        .bind(reason)
        .bind(state)
        .bind(state.map(|_| "mastodon"))
        .bind(attempts)
        .bind(next)
        .bind(list)
        .bind(position as i64 + 1)
        .execute(&pool)
        .await
        .expect("insert a post");
    }
    for (reservation, status) in [(open, "open"), (committed, "committed")] {
        sqlx::query(
            "INSERT INTO reservations (tenant_id, reservation_id, period, amount_micros, purpose,
                                       status, expires_at, created_at)
             VALUES ($1, $2, '2026-02', 100, 'hold', $3, '2026-02-20T10:00:00.000000Z',
                     '2026-02-20T08:00:00.000000Z')",
        )
        .bind(tenant.to_string())
        .bind(reservation.to_string())
        .bind(status)
        .execute(&pool)
        .await
        .expect("insert a reservation");
    }
    pool.close().await;

    let models = ReadModels::open(&path)
        .await
        .expect("migrate to the latest");

    let view = |post| {
        let models = models.clone();
        async move {
            models
                .post(tenant, post)
                .await
                .expect("query")
                .expect("the post is still there")
        }
    };
    let one = view(published).await;
    assert_eq!(one.targets.len(), 1);
    let target = &one.targets[0];
    assert_eq!(
        (target.channel.as_str(), target.state.as_deref()),
        ("linkedin", Some("published"))
    );
    assert_eq!(target.network_post_id.as_deref(), Some("n-1"));
    assert_eq!(target.attempts.len(), 1);
    assert_eq!(one.network_post_id.as_deref(), Some("n-1"));
    let delivery = one.delivery.as_ref().expect("a delivery");
    assert_eq!(delivery.state, "published");
    assert_eq!(delivery.attempts, target.attempts);

    let gone = view(removed).await;
    assert_eq!(gone.status, "removed");
    assert_eq!(gone.targets[0].state.as_deref(), Some("removed"));

    let waiting = view(retrying).await;
    assert_eq!(
        waiting.targets[0].state.as_deref(),
        Some("failed_retryable")
    );
    assert_eq!(
        waiting.targets[0].reason.as_deref(),
        Some("503 Service Unavailable")
    );
    assert_eq!(waiting.failure_reason, waiting.targets[0].reason);
    let open_deliveries = models
        .open_deliveries(at(21, 0), 100)
        .await
        .expect("open deliveries");
    assert_eq!(
        open_deliveries
            .iter()
            .map(|d| (d.post, d.channel.as_str()))
            .collect::<Vec<_>>(),
        [(retrying, "linkedin")]
    );

    let fresh = view(draft).await;
    assert_eq!(fresh.targets[0].state, None);
    assert_eq!(fresh.delivery, None);

    let due = models
        .due_timers(at(28, 0), &TimerCursor::default(), 100)
        .await
        .expect("due timers");
    let timers: Vec<(TimerKind, &str, Option<u64>, DateTime<Utc>)> = due
        .iter()
        .map(|t| (t.kind, t.subject.as_str(), t.version, t.due_at))
        .collect();
    let post_subject = scheduled.to_string();
    assert_eq!(
        timers,
        [
            (TimerKind::ReservationExpiry, "2026-02", None, at(20, 10)),
            (
                TimerKind::PostPublish,
                post_subject.as_str(),
                Some(2),
                at(21, 9)
            ),
        ]
    );
    assert_eq!(due[0].key, format!("2026-02/{open}"));
}
