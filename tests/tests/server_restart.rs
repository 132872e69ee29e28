//! The Temporal dev server is stopped and restarted on the same database file mid-deploy: the
//! deploy resumes from its history and completes.

use std::collections::BTreeMap;
use std::time::Duration;

use signalbox_devstack::wait_for;
use signalbox_domain::Phase;
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, Stack, StackOptions, demo_build, publish, request};
use signalbox_tests::{record_history, run, scratch};

#[test]
fn a_restarted_server_resumes_the_deploy() {
    run(async {
        let mut s = Stack::start(StackOptions::in_dir(scratch("server-restart"))).await?;
        let base = publish(&s.home, demo_build("ledger", "4.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("ledger", "4.1.0", 0.002, 5)).await?;
        let fleet = LoadedFleet::start(&s.home, "restart", 20, base, 400, &s.options.dir).await?;
        let deploys = s.deploys().await?;
        let id = deploys.start(request("ledger", "restart", next), None).await?.id;

        wait_for("the second batch", Duration::from_secs(120), || async {
            let st = deploys.status(&id).await?;
            Ok((st.current_batch >= 2 && !st.phase.is_final()).then_some(st))
        })
        .await?;
        let address = s.server.address();
        s.server.stop().await?;
        assert!(deploys.status(&id).await.is_err(), "the server at {address} is really down");
        s.server.restart().await?;
        assert_eq!(s.server.address(), address);

        // The client reconnects on its own; the worker resumes polling.
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
        assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
        assert_eq!(status.instances_per_version, BTreeMap::from([("4.1.0".to_owned(), 20)]));
        let served = fleet.served_versions().await;
        assert!(served.iter().all(|v| v.as_deref() == Some("4.1.0")), "instances answer {served:?}");
        record_history(&deploys, &id, "server_restart").await
    });
}
