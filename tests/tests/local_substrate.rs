//! The local substrate's promises to a retried activity, on real instance processes: a retried
//! apply reports the change its first try made, a build an instance ran before the deploy is
//! not this deploy's to undo, and a halt mark is set once and lifted only by its deploy.

use signalbox_devstack::workspace_binary;
use signalbox_localstack::{demo_build, publish};
use signalbox_store::Home;
use signalbox_substrate::Substrate;
use signalbox_substrate_local::LocalFleet;
use signalbox_tests::{run, scratch};

#[test]
fn a_retried_apply_keeps_its_undo_and_a_build_already_there_is_not_undone() {
    run(async {
        let dir = scratch("local-substrate-apply");
        let home = Home::new(dir.join("home"));
        std::fs::create_dir_all(home.root())?;
        let good = publish(&home, demo_build("ledger", "1.0.0", 0.0, 1)).await?;
        let next = publish(&home, demo_build("ledger", "1.1.0", 0.0, 1)).await?;
        let regions = ["us-east"];
        let fleet = LocalFleet::provision(&home, "ledger", 2, &regions, workspace_binary("signalbox-demo-service")?, &good.digest).await?;
        home.region_cache("us-east")?.copy_from(&home.store()?, &next.digest).await?;
        let first = vec![fleet.instances()[0].id.clone()];

        let applied = fleet.apply("deploy-a", &first, &next, &|_| {}).await?;
        assert_eq!(applied[0].from_digest, good.digest);
        let retried = fleet.apply("deploy-a", &first, &next, &|_| {}).await?;
        assert_eq!(retried[0].from_digest, good.digest, "a retry of the same deploy still undoes to what it replaced");

        // Another deploy of the same build finds it there: nothing of it is that deploy's.
        let again = fleet.apply("deploy-b", &first, &next, &|_| {}).await?;
        assert_eq!(again[0].from_digest, next.digest);
        fleet.rollback("deploy-b", &again, &|_| {}).await?;
        let states = fleet.describe().await?;
        assert_eq!(states[0].digest, next.digest, "undoing deploy-b leaves deploy-a's build");
        assert_eq!(states[0].changed_by.as_deref(), Some("deploy-a"));

        fleet.rollback("deploy-a", &applied, &|_| {}).await?;
        assert_eq!(fleet.describe().await?[0].digest, good.digest);
        fleet.shutdown().await;
        Ok(())
    })
}

#[test]
fn a_halt_mark_is_set_once_and_lifted_only_by_its_deploy() {
    run(async {
        let dir = scratch("local-substrate-halt");
        let home = Home::new(dir.join("home"));
        std::fs::create_dir_all(home.root())?;
        let good = publish(&home, demo_build("ledger", "1.0.0", 0.0, 1)).await?;
        let fleet = LocalFleet::provision(&home, "frozen", 1, &["us-east"], workspace_binary("signalbox-demo-service")?, &good.digest).await?;

        fleet.halt("deploy-a", "halted by alice: smoke").await?;
        fleet.halt("deploy-a", "halted by alice: smoke").await?;
        let halts = fleet.audit_events("deploy-a").await?.into_iter().filter(|e| e.action == "halt").count();
        assert_eq!(halts, 1, "a retried halt records nothing twice");

        fleet.release("deploy-b").await?;
        assert_eq!(fleet.halted_by()?.map(|m| m.deploy_id).as_deref(), Some("deploy-a"), "another deploy cannot lift it");
        fleet.release("deploy-a").await?;
        assert_eq!(fleet.halted_by()?, None);
        fleet.release("deploy-a").await?;
        fleet.shutdown().await;
        Ok(())
    })
}
