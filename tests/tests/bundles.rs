//! A user's own program, not the demo service: a Python HTTP service packed as a bundle
//! (`examples/hello-py`), pushed with `signalbox artifact push` through the artifact API, and
//! rolled out with `signalbox deploy start` to a fleet of real processes under load. A good
//! build reaches every instance; a bad one is caught in its first batch and every instance
//! answers with the good one again.

use std::collections::BTreeSet;

use signalbox_domain::{Artifact, Phase};
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet};
use signalbox_tests::{GrpcApi, pack_hello, push_bundle, run, signalbox, stack};

const SERVICE: &str = "hello-py";

/// What every instance answers on `/`, asked over HTTP.
async fn answers(fleet: &LoadedFleet) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let mut versions = Vec::new();
    for spec in fleet.fleet.instances() {
        let body: serde_json::Value = http.get(format!("http://127.0.0.1:{}/", spec.port)).send().await?.json().await?;
        versions.push(body["version"].as_str().unwrap_or_default().to_owned());
    }
    Ok(versions)
}

#[test]
fn a_python_bundle_pushed_with_the_cli_rolls_out_and_a_bad_one_rolls_back() {
    run(async {
        let s = stack().await;
        let api = GrpcApi::start(s).await?;
        let dir = tempfile::tempdir()?;

        // Pushed through the API: the digest is the bytes', the record what the pusher said.
        let v1 = pack_hello(dir.path(), "1.0.0", 0.0)?;
        let (d1, _) = push_bundle(&api, SERVICE, &v1, "1.0.0").await?;
        assert_eq!(d1, format!("sha256:{}", signalbox_store::digest_of(&std::fs::read(&v1)?).hex()));
        let (again, said) = push_bundle(&api, SERVICE, &v1, "1.0.0").await?;
        assert_eq!(again, d1, "the same bytes are the same build");
        assert!(said.contains("already in the store"), "a second push sends nothing: {said}");
        let (d2, _) = push_bundle(&api, SERVICE, &pack_hello(dir.path(), "2.0.0", 0.0)?, "2.0.0").await?;
        let (d3, _) = push_bundle(&api, SERVICE, &pack_hello(dir.path(), "3.0.0", 0.5)?, "3.0.0").await?;

        let (code, out, err) = signalbox(&["artifact", "show", "--api", &api.url, &d2]).await?;
        assert_eq!(code, Some(0), "{err}");
        let shown: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!((shown["version"].as_str(), shown["format"].as_str(), shown["pushed_by"].as_str()), (Some("2.0.0"), Some("bundle"), Some("ci@example")));
        assert_eq!(shown["labels"]["team"], "web");
        let (_, out, _) = signalbox(&["artifact", "list", "--api", &api.url, "--service", SERVICE, "--json"]).await?;
        let listed: BTreeSet<String> = out.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).map(|v| v["digest"].as_str().unwrap_or_default().to_owned())).collect::<Result<_, _>>()?;
        assert_eq!(listed, BTreeSet::from([d1.clone(), d2.clone(), d3.clone()]));

        // Provisioned on 1.0.0, under load.
        let initial = Artifact { digest: d1.parse()?, git_sha: "0a1b2c3d".into(), version: "1.0.0".into() };
        let fleet = LoadedFleet::start(&s.home, SERVICE, 4, initial, 200, &s.options.dir).await?;
        assert_eq!(answers(&fleet).await?, vec!["1.0.0"; 4]);

        // The deploy names the digest alone: version and git SHA come from the store.
        let deploy = |digest: &str| {
            [
                "deploy", "start", "--api", &api.url, "--service", SERVICE, "--target", SERVICE, "--artifact-digest", digest, "--health-window-ms", "1000", "--health-samples", "4",
                "--health-min-requests", "10", "--bake-ms", "500", "--rollback-window-ms", "0", "--deployer", "ci@example", "--watch",
            ]
            .map(str::to_owned)
        };
        let args = deploy(&d2);
        let (code, out, err) = signalbox(&args.each_ref().map(String::as_str)).await?;
        assert_eq!(code, Some(0), "a good build succeeds: {out}{err}");
        assert_eq!(answers(&fleet).await?, vec!["2.0.0"; 4], "every instance answers with the new version");

        let args = deploy(&d3);
        let (code, out, err) = tokio::time::timeout(DEPLOY_DEADLINE, signalbox(&args.each_ref().map(String::as_str))).await??;
        assert_eq!(code, Some(1), "a bad build does not succeed: {out}{err}");
        let id = out.lines().next().unwrap_or_default().to_owned();
        let status = s.deploys().await?.result(&id).await?;
        assert_eq!(status.phase, Phase::RolledBack, "{status:#?}");
        assert!(status.reason.as_deref().unwrap_or_default().starts_with("batch 1"), "caught in the first batch: {:?}", status.reason);
        assert_eq!(answers(&fleet).await?, vec!["2.0.0"; 4], "every instance answers with the good build again");
        let ran_bad: BTreeSet<String> = fleet.fleet.oplog()?.into_iter().filter(|e| e.op == "restart" && e.digest.to_string() == d3).map(|e| e.instance).collect();
        assert_eq!(ran_bad.len(), 1, "only the first batch ran the bad build: {ran_bad:?}");
        api.stop().await
    });
}

#[test]
fn a_bundle_that_cannot_run_is_refused_at_push_naming_the_field() {
    run(async {
        let s = stack().await;
        let api = GrpcApi::start(s).await?;
        let dir = tempfile::tempdir()?;
        let good = pack_hello(dir.path(), "1.0.0", 0.0)?;
        let bad_manifest = dir.path().join("bad.tar.gz");
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        let manifest = br#"{"start": {"command": "python3", "args": ["server.py", "--port=${PROT}"]}}"#;
        let mut header = tar::Header::new_gnu();
        header.set_size(manifest.len() as u64);
        header.set_cksum();
        tar.append_data(&mut header, "signalbox.json", manifest.as_slice())?;
        std::fs::write(&bad_manifest, tar.into_inner()?.finish()?)?;

        let (code, _, err) = signalbox(&["artifact", "push", "--api", &api.url, bad_manifest.to_str().unwrap(), "--service", SERVICE, "--version", "9.0.0", "--git-sha", "0a1b2c3d", "--by", "ci"]).await?;
        assert_eq!(code, Some(2), "a refused push exits 2: {err}");
        assert!(err.contains("signalbox.json: start.args[1]: unknown placeholder ${PROT}"), "{err}");
        let (code, _, err) = signalbox(&["artifact", "push", "--api", &api.url, good.to_str().unwrap(), "--service", SERVICE, "--version", "9.0.0", "--git-sha", "xyz", "--by", "ci"]).await?;
        assert_eq!(code, Some(2));
        assert!(err.contains("git_sha: must be 7 to 40 hex digits"), "{err}");
        let (code, _, err) = signalbox(&["artifact", "push", "--api", &api.url, good.to_str().unwrap(), "--service", "Hello Py", "--version", "9.0.0", "--git-sha", "0a1b2c3d", "--by", "ci"]).await?;
        assert_eq!(code, Some(2));
        assert!(err.contains("service: must be 1 to 63 of a-z"), "{err}");
        // Nothing refused was stored.
        let (_, out, _) = signalbox(&["artifact", "list", "--api", &api.url, "--service", SERVICE, "--json"]).await?;
        assert!(!out.contains("9.0.0"), "{out}");
        let (code, _, err) = signalbox(&["artifact", "show", "--api", &api.url, &format!("sha256:{}", "0".repeat(64))]).await?;
        assert_eq!(code, Some(2));
        assert!(err.contains("digest: the store holds no build"), "{err}");
        api.stop().await
    });
}
