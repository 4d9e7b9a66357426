//! The commands `runbooks/queries-time-out-or-read-models-look-stale.md` tells an
//! operator to paste, run against a data directory whose read models are behind.

use std::path::Path;
use std::sync::Arc;

use clap::Parser;
use cli::app::Stores;
use cli::settings::Settings;
use cli::{Cli, projection_status};
use command_api::{CommandService, Envelope, SystemClock};
use domain::post::Command;
use domain::{Channel, PostId, TenantId};
use uuid::Uuid;

async fn embedded(dir: &Path) -> Stores {
    let mut settings = Settings::load(None).expect("settings");
    settings.data_dir = dir.to_path_buf();
    Stores::open(&settings).await.expect("stores open")
}

async fn run(args: &[&str]) {
    cli::run(Cli::parse_from(args))
        .await
        .expect("command succeeds");
}

#[tokio::test]
async fn status_reports_the_lag_and_rebuild_closes_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    {
        // Write events with no projector running: the read models fall behind.
        let stores = embedded(dir.path()).await;
        let store = stores.store.clone();
        let service = CommandService::new(store, Arc::new(SystemClock));
        let tenant = TenantId::from_uuid(Uuid::now_v7());
        for _ in 0..3 {
            let create = Command::Create {
                channels: vec![Channel::new("blog").expect("channel")],
                body: "hello".into(),
                campaign_id: None,
            };
            service
                .post(
                    &Envelope::system(tenant, "test", None),
                    PostId::from_uuid(Uuid::now_v7()),
                    None,
                    create,
                )
                .await
                .expect("post created");
        }
        let status = projection_status(&stores).await.expect("status");
        assert_eq!(status.head, 3);
        assert_eq!(status.lag(), 3, "nothing projected yet");
    }

    run(&["tidemark", "projections", "status", "--data-dir", data_dir]).await;
    run(&["tidemark", "projections", "rebuild", "--data-dir", data_dir]).await;

    let stores = embedded(dir.path()).await;
    let status = projection_status(&stores).await.expect("status");
    assert_eq!(status.lag(), 0, "rebuild catches the read models up");
    assert!(
        status.rows.contains(&("posts", 3)),
        "rows: {:?}",
        status.rows
    );

    // A second rebuild is harmless: same rows, same position.
    run(&["tidemark", "projections", "rebuild", "--data-dir", data_dir]).await;
    assert_eq!(projection_status(&stores).await.expect("status"), status);
}
