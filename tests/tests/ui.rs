//! Operators inspect deploys in the Temporal Web UI: headless Chromium against the dev server's
//! UI opens the workflow list filtered by a search attribute and a deploy's detail pages, and
//! keeps screenshots as test artifacts.

use std::path::PathBuf;

use signalbox_devstack::browser::{dump_dom, screenshot};
use signalbox_devstack::free_port;
use signalbox_domain::Phase;
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, Stack, StackOptions, demo_build, publish, request};
use signalbox_tests::{run, scratch};

/// Where screenshots are kept: `$SIGNALBOX_TEST_ARTIFACTS`, else `test-artifacts` beside the
/// build's target directory.
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("SIGNALBOX_TEST_ARTIFACTS").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("test binary path");
        exe.ancestors().nth(3).expect("target dir").join("test-artifacts")
    });
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn the_web_ui_finds_a_deploy_by_search_attribute_and_shows_service_and_phase() {
    run(async {
        let mut options = StackOptions::in_dir(scratch("ui"));
        options.ui_port = Some(free_port()?);
        let s = Stack::start(options).await?;
        let ui = s.server.ui_url().expect("the stack serves the UI");
        let base = publish(&s.home, demo_build("storefront", "6.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("storefront", "6.1.0", 0.002, 5)).await?;
        let _fleet = LoadedFleet::start(&s.home, "ui", 4, base, 200, &s.options.dir).await?;
        let deploys = s.deploys().await?;
        let id = deploys.start(request("storefront", "ui", next), None).await?.id;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
        assert_eq!(status.phase, Phase::Succeeded);

        // The list, filtered by the service's search attribute, holds the deploy; filtered by
        // another service, it does not.
        let ns = &s.options.namespace;
        let list = |service: &str| format!("{ui}/namespaces/{ns}/workflows?query={}", encode(&format!("SignalboxService=\"{service}\"")));
        let matching = dump_dom(&list("storefront"))?;
        assert!(matching.contains(&id), "the filtered list shows {id}");
        let other = dump_dom(&list("no-such-service"))?;
        assert!(!other.contains(&id), "a filter on another service hides {id}");
        screenshot(&list("storefront"), &artifacts().join("ui-workflow-list.png"))?;

        // The detail page links its tabs; the search-attributes tab shows service and phase.
        let detail = dump_dom(&format!("{ui}/namespaces/{ns}/workflows/{}", encode(&id)))?;
        let tab = detail
            .split("href=\"")
            .filter_map(|rest| rest.split('"').next())
            .find(|href| href.ends_with("/search-attributes"))
            .ok_or_else(|| anyhow::anyhow!("the detail page links its search attributes"))?
            .to_owned();
        let attributes = dump_dom(&format!("{ui}{tab}"))?;
        for shown in ["SignalboxService", "storefront", "SignalboxPhase", "Succeeded", "SignalboxArtifactDigest"] {
            assert!(attributes.contains(shown), "the search attributes tab shows {shown}");
        }
        let memo = dump_dom(&format!("{ui}{}", tab.replace("/search-attributes", "/memo")))?;
        assert!(memo.contains("storefront 6.1.0"), "the memo shows the config summary");
        screenshot(&format!("{ui}{tab}"), &artifacts().join("ui-deploy-search-attributes.png"))?;
        screenshot(&format!("{ui}/namespaces/{ns}/workflows/{}", encode(&id)), &artifacts().join("ui-deploy-detail.png"))?;
        Ok(())
    });
}
