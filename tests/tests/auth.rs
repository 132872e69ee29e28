//! Authenticated control over real TLS: certificates from the test's own CA, tokens signed by
//! its own identity provider and checked against its JWKS, a policy file, and the real
//! `signalbox` CLI, against the shared dev server, the worker process and a real fleet.

use std::path::{Path, PathBuf};
use std::time::Duration;

use signalbox_domain::control::Action;
use signalbox_domain::{ApprovalPolicy, Artifact, BatchPlan, BatchStep, DeployStatus, OnExpiry, Phase};
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, Stack, demo_build, publish, request};
use signalbox_proto::pb;
use signalbox_proto::pb::deploy_service_client::DeployServiceClient;
use signalbox_tests::pki::{Idp, Pki};
use signalbox_tests::{run, stack, temporal};
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};

const ISSUER: &str = "https://login.signalbox.test";
const AUDIENCE: &str = "signalbox";

const POLICY: &str = r#"
[[allow]]
who = ["alice@example.com"]
roles = ["start", "steer", "approve"]
services = ["auth-*"]

[[allow]]
who = ["bob@example.com"]
roles = ["approve"]

[[allow]]
who = ["group:sre"]
roles = ["admin"]
"#;

/// A deploy API serving TLS with the test's auth file, in-process on a loopback port.
struct SecuredApi {
    url: String,
    pki: Pki,
    idp: Idp,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl SecuredApi {
    async fn start(s: &Stack, dir: &Path) -> anyhow::Result<Self> {
        let pki = Pki::new(dir)?;
        let (cert, key) = pki.server("api")?;
        let idp = Idp::new(ISSUER, AUDIENCE, "key-1")?;
        std::fs::write(dir.join("jwks.json"), idp.jwks()?)?;
        std::fs::write(dir.join("policy.toml"), POLICY)?;
        let control_key = signalbox_localstack::control_key_file(&s.options);
        let auth = format!(
            "policy = \"policy.toml\"\ncontrol_key = {control_key:?}\n[tls]\ncert = {cert:?}\nkey = {key:?}\nclient_ca = \"ca.pem\"\n[oidc]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks = \"jwks.json\"\n"
        );
        std::fs::write(dir.join("auth.toml"), auth)?;
        let security = signalbox_api::auth::Security::load(&dir.join("auth.toml"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
        let artifacts = signalbox_api::artifacts::Artifacts::new(s.home.store()?, signalbox_api::artifacts::DEFAULT_MAX_ARTIFACT_BYTES);
        let targets = signalbox_api::targets::Targets::new(vec!["http://127.0.0.1:2379".into()]);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(signalbox_api::grpc::serve(listener, s.deploys().await?, s.releases().await?, artifacts, targets, security, async {
            let _ = stopped.await;
        }));
        Ok(Self { url, pki, idp, stop, server })
    }

    /// A client over TLS trusting the test CA, presenting `cert` (a client certificate) if given.
    async fn client(&self, cert: Option<(PathBuf, PathBuf)>) -> anyhow::Result<DeployServiceClient<Channel>> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(self.pki.ca())?));
        if let Some((cert, key)) = cert {
            tls = tls.identity(Identity::from_pem(std::fs::read(cert)?, std::fs::read(key)?));
        }
        let channel = Channel::from_shared(self.url.clone())?.tls_config(tls)?.connect().await?;
        Ok(DeployServiceClient::new(channel))
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        Ok(self.server.await??)
    }
}

/// A fleet `name` of `size` instances of `service` 1.0.0 under `rps` of load, and the 1.1.0
/// build to deploy to it.
async fn fleet_of(s: &Stack, service: &str, name: &str, size: usize, rps: u32) -> anyhow::Result<(LoadedFleet, Artifact)> {
    let base = publish(&s.home, demo_build(service, "1.0.0", 0.002, 5)).await?;
    let next = publish(&s.home, demo_build(service, "1.1.0", 0.002, 5)).await?;
    Ok((LoadedFleet::start(&s.home, name, size, base, rps, &s.options.dir).await?, next))
}

/// `message` with `authorization: Bearer <token>`.
fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("a token is ASCII"));
    request
}

/// A refusal's code and message; panics on success.
fn refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    let status = r.expect_err("the call must be refused");
    (status.code(), status.message().to_owned())
}

fn control(id: &str, by: &str, reason: &str) -> pb::ControlDeployRequest {
    pb::ControlDeployRequest { deploy_id: id.to_owned(), by: by.to_owned(), reason: reason.to_owned() }
}

/// Runs the real `signalbox` CLI with `env` set; returns its exit code, stdout and stderr.
async fn signalbox(env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<(Option<i32>, String, String)> {
    let mut command = tokio::process::Command::new(signalbox_devstack::workspace_binary("signalbox")?);
    command.args(args).env_remove("SIGNALBOX_API").env_remove("SIGNALBOX_DEPLOYER").env("USER", "mallory");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().await?;
    Ok((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

async fn status(client: &DeployServiceClient<Channel>, token: &str, id: &str) -> anyhow::Result<DeployStatus> {
    let wire = client.clone().get_deploy(bearer(token, pb::GetDeployRequest { deploy_id: id.to_owned() })).await?.into_inner();
    Ok(DeployStatus::try_from(wire)?)
}

async fn until(client: &DeployServiceClient<Channel>, token: &str, id: &str, what: &str, ready: impl Fn(&DeployStatus) -> bool) -> anyhow::Result<DeployStatus> {
    signalbox_devstack::wait_for(what, DEPLOY_DEADLINE, || async {
        let st = status(client, token, id).await?;
        Ok(ready(&st).then_some(st))
    })
    .await
}

#[test]
fn no_credential_or_a_bad_token_is_unauthenticated() {
    run(async {
        let s = stack().await;
        let api = SecuredApi::start(s, &s.options.dir.join("auth-tokens")).await?;
        let client = api.client(None).await?;
        let get = || pb::GetDeployRequest { deploy_id: "deploy/auth-x/auth-x/1".into() };

        let (code, message) = refused(client.clone().get_deploy(get()).await);
        assert_eq!(code, Code::Unauthenticated, "{message}");
        assert!(message.contains("no credential"), "{message}");

        let expired = api.idp.token("alice@example.com", &[], -600)?;
        let (code, message) = refused(client.clone().get_deploy(bearer(&expired, get())).await);
        assert_eq!(code, Code::Unauthenticated, "{message}");
        assert!(message.contains("ExpiredSignature"), "{message}");

        let now = chrono::Utc::now().timestamp();
        let elsewhere = api.idp.sign(&serde_json::json!({"iss": ISSUER, "aud": "another-app", "sub": "alice", "exp": now + 600}))?;
        let (code, message) = refused(client.clone().get_deploy(bearer(&elsewhere, get())).await);
        assert_eq!((code, message.contains("InvalidAudience")), (Code::Unauthenticated, true), "{message}");
        let forged_issuer = api.idp.sign(&serde_json::json!({"iss": "https://evil.test", "aud": AUDIENCE, "sub": "alice", "exp": now + 600}))?;
        let (code, message) = refused(client.clone().get_deploy(bearer(&forged_issuer, get())).await);
        assert_eq!((code, message.contains("InvalidIssuer")), (Code::Unauthenticated, true), "{message}");

        // Another key under the same name: the signature does not verify.
        let impostor = Idp::new(ISSUER, AUDIENCE, "key-1")?;
        let (code, message) = refused(client.clone().get_deploy(bearer(&impostor.token("alice@example.com", &["sre"], 600)?, get())).await);
        assert_eq!((code, message.contains("InvalidSignature")), (Code::Unauthenticated, true), "{message}");
        let unknown = Idp::new(ISSUER, AUDIENCE, "key-2")?;
        let (code, message) = refused(client.clone().get_deploy(bearer(&unknown.token("alice@example.com", &[], 600)?, get())).await);
        assert_eq!((code, message.as_str()), (Code::Unauthenticated, "the bearer token is signed by an unknown key (key-2)"));
        let (code, message) = refused(client.clone().get_deploy(bearer("not-a-jwt", get())).await);
        assert_eq!((code, message.contains("is not a JWT")), (Code::Unauthenticated, true), "{message}");

        // A good token gets past authentication: the deploy is simply not there.
        let good = api.idp.token("alice@example.com", &[], 600)?;
        let (code, message) = refused(client.clone().get_deploy(bearer(&good, get())).await);
        assert_eq!(code, Code::NotFound, "{message}");

        // The real CLI: plaintext to a TLS server fails; without a credential it is refused.
        let ca = api.pki.ca().to_string_lossy().into_owned();
        let (code, _, err) = signalbox(&[("SIGNALBOX_CA", &ca)], &["deploy", "get", "deploy/auth-x/auth-x/1", "--api", &api.url]).await?;
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("no credential: this server needs a bearer token"), "{err}");
        let (code, _, err) = signalbox(&[("SIGNALBOX_CA", &ca), ("SIGNALBOX_TOKEN", &good)], &["deploy", "get", "deploy/auth-x/auth-x/1", "--api", &api.url]).await?;
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("not found") || err.contains("no deploy"), "authenticated, the CLI reaches the deploy lookup: {err}");
        api.stop().await
    });
}

#[test]
fn the_principal_comes_from_the_credential_and_the_policy_decides() {
    run(async {
        let s = stack().await;
        let dir = s.options.dir.join("auth-policy");
        let api = SecuredApi::start(s, &dir).await?;
        let client = api.client(None).await?;
        let alice = api.idp.token("Alice@Example.com", &[], 600)?;
        let bob = api.idp.token("bob@example.com", &[], 600)?;
        let erin = api.idp.token("erin@example.com", &["deployers"], 600)?;

        let service = "auth-gated";
        let (fleet, next) = fleet_of(s, service, service, 3, 150).await?;
        let mut req = request(service, service, next.clone());
        req.batch_plan = BatchPlan { steps: [1, 3].into_iter().map(BatchStep::Count).collect() };
        req.approval = Some(ApprovalPolicy {
            before_batches: vec![2],
            approvers: vec!["alice@example.com".into(), "bob@example.com".into(), "erin@example.com".into()],
            quorum: 1,
            allow_self_approval: false,
            expiry_ms: 10 * 60 * 1000,
            on_expiry: OnExpiry::Abort,
        });

        // Starting as someone else, or without the role, is refused before anything starts.
        let (code, message) = refused(client.clone().start_deploy(bearer(&alice, pb::StartDeployRequest::from(req.clone()))).await);
        assert_eq!(code, Code::PermissionDenied, "{message}");
        assert_eq!(message, "deployer: you are authenticated as alice@example.com; a call cannot act as \"ci@signalbox\"");
        req.deployer = String::new();
        let (code, message) = refused(client.clone().start_deploy(bearer(&erin, pb::StartDeployRequest::from(req.clone()))).await);
        assert_eq!((code, message.as_str()), (Code::PermissionDenied, "erin@example.com lacks the role start for service auth-gated, target auth-gated"));
        let id = client.clone().start_deploy(bearer(&alice, pb::StartDeployRequest::from(req.clone()))).await?.into_inner().deploy_id;
        until(&client, &bob, &id, "the gate before batch 2", |s| s.phase == Phase::AwaitingApproval).await?;

        // Four-eyes on the authenticated identity: alice's token, whatever its spelling.
        let approve = |approver: &str| pb::ApproveDeployRequest { deploy_id: id.clone(), approver: approver.into(), reason: "fine".into() };
        let (code, message) = refused(client.clone().approve_deploy(bearer(&alice, approve(""))).await);
        assert_eq!((code, message.as_str()), (Code::FailedPrecondition, "alice@example.com started this deploy and may not approve it"));
        let (code, message) = refused(client.clone().approve_deploy(bearer(&erin, approve(""))).await);
        assert_eq!((code, message.as_str()), (Code::PermissionDenied, "erin@example.com lacks the role approve for service auth-gated, target auth-gated"));
        let (code, message) = refused(client.clone().approve_deploy(bearer(&bob, approve("erin@example.com"))).await);
        assert_eq!(code, Code::PermissionDenied, "a request cannot name another approver: {message}");
        let (code, message) = refused(client.clone().bypass_deploy(bearer(&alice, control(&id, "", "hurry"))).await);
        assert_eq!((code, message.as_str()), (Code::PermissionDenied, "alice@example.com lacks the role bypass for service auth-gated, target auth-gated"));
        let (code, message) = refused(client.clone().pause_deploy(bearer(&alice, control(&id, "bob@example.com", ""))).await);
        assert_eq!(code, Code::PermissionDenied, "{message}");
        let held = status(&client, &bob, &id).await?;
        assert!(held.audit.is_empty() && held.bypass.is_none() && held.phase == Phase::AwaitingApproval, "refused calls change nothing: {held:#?}");

        // Bob approves with the real CLI: $USER (mallory) is not who the token says.
        let ca = api.pki.ca().to_string_lossy().into_owned();
        let token_file = dir.join("bob.jwt");
        std::fs::write(&token_file, &bob)?;
        let token_file = token_file.to_string_lossy().into_owned();
        let (code, out, err) = signalbox(&[("SIGNALBOX_CA", &ca), ("SIGNALBOX_TOKEN_FILE", &token_file)], &["deploy", "approve", &id, "--api", &api.url, "--reason", "canary is clean"]).await?;
        assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
        assert!(out.contains("approve by bob@example.com: canary is clean"), "{out}");

        // A service with a certificate from the CA, in the sre unit (admin), aborts.
        let ci = api.client(Some(api.pki.client("ci-bot", &["sre"])?)).await?;
        let aborted = ci.clone().abort_deploy(control(&id, "", "the release train was cancelled")).await?.into_inner();
        assert!(!aborted.audit.is_empty());
        let done = until(&client, &bob, &id, "the deploy to roll back", |s| s.phase.is_final()).await?;
        assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
        let audit: Vec<(Action, &str)> = done.audit.iter().map(|e| (e.action, e.by.as_str())).collect();
        assert_eq!(audit, [(Action::Approve, "bob@example.com"), (Action::Abort, "ci-bot")], "the audit names the authenticated principals");
        // A certificate outside any rule's unit holds no role.
        let stranger = api.client(Some(api.pki.client("batch-job", &["jobs"])?)).await?;
        let (code, message) = refused(stranger.clone().pause_deploy(control(&id, "", "")).await);
        assert_eq!((code, message.as_str()), (Code::PermissionDenied, "batch-job lacks the role steer for service auth-gated, target auth-gated"));

        // The record, from the real server's visibility and the deploy's own trail, through the CLI.
        let env = [("SIGNALBOX_CA", ca.as_str()), ("SIGNALBOX_TOKEN_FILE", token_file.as_str())];
        let listed = signalbox_devstack::wait_for("the deploy's end in visibility", Duration::from_secs(30), || async {
            let (code, out, err) = signalbox(&env, &["deploy", "list", "--api", &api.url, "--service", service, "--since", "1h", "--json"]).await?;
            anyhow::ensure!(code == Some(0), "{err}");
            Ok(out.contains("rolled_back").then_some(out))
        })
        .await?;
        let rows: Vec<serde_json::Value> = listed.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        assert_eq!(rows.len(), 1, "{listed}");
        assert_eq!((rows[0]["deploy_id"].as_str(), rows[0]["deployer"].as_str(), rows[0]["artifact_digest"].as_str()), (Some(id.as_str()), Some("alice@example.com"), Some(next.digest.to_string().as_str())));
        // The config snapshot the record names is the deploy's own input, as its history keeps it.
        let history: serde_json::Value = serde_json::from_str(&s.deploys().await?.history_json(&id).await?)?;
        let input = &history["events"][0]["attributes"]["WorkflowExecutionStartedEventAttributes"]["input"]["payloads"][0]["data"];
        let input = { use base64::Engine as _; base64::engine::general_purpose::STANDARD.decode(input.as_str().unwrap_or_default())? };
        let snapshot = { use sha2::Digest as _; hex::encode(sha2::Sha256::digest(&input)) };
        assert_eq!(rows[0]["config_sha256"].as_str(), Some(snapshot.as_str()), "{listed}");
        assert!(rows[0]["config"]["batches"].as_str().is_some_and(|b| b.starts_with("rolling")), "{listed}");
        let (code, out, err) = signalbox(&env, &["deploy", "list", "--api", &api.url, "--service", service, "--since", "1h", "--phase", "succeeded"]).await?;
        assert_eq!((code, out.as_str()), (Some(0), ""), "no deploy of it succeeded: {err}");
        let (code, out, err) = signalbox(&env, &["audit", "--api", &api.url, "--service", service, "--since", "1h"]).await?;
        assert_eq!(code, Some(0), "{err}");
        let actions: Vec<&str> = out.lines().map(|l| l.split_once(&format!("{id}  ")).map_or(l, |(_, rest)| rest)).collect();
        assert_eq!(actions.len(), 3, "{out}");
        assert!(actions[0].starts_with("start by alice@example.com: sha256:"), "{out}");
        assert_eq!(&actions[1..], ["approve by bob@example.com: canary is clean", "abort by ci-bot: the release train was cancelled"], "{out}");
        let (code, out, err) = signalbox(&env, &["audit", "--api", &api.url, "--service", service, "--since", "1h", "--json"]).await?;
        assert_eq!(code, Some(0), "{err}");
        let entries: Vec<serde_json::Value> = out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        assert_eq!(entries.len(), 3, "{out}");
        assert!(entries.iter().all(|e| e["config_sha256"].as_str() == Some(snapshot.as_str())), "every entry names the snapshot in force: {out}");
        let (code, _, err) = signalbox(&env, &["deploy", "list", "--api", &api.url, "--service", "Auth Gated", "--since", "1h"]).await?;
        assert_eq!(code, Some(2));
        assert!(err.contains("service: must be 1 to 63 of a-z"), "{err}");
        drop(fleet);
        api.stop().await
    });
}

/// The first grant a history's payloads carry, as anyone reading the history (the Web UI,
/// `temporal workflow show`) can copy it.
fn copied_grant(history: &serde_json::Value) -> Option<String> {
    use base64::Engine;
    match history {
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            let decoded = (k == "data").then(|| v.as_str()).flatten().and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
            let grant = decoded.and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok()).and_then(|j| j.get("grant").and_then(|g| g.as_str()).map(str::to_owned));
            grant.or_else(|| copied_grant(v))
        }),
        serde_json::Value::Array(items) => items.iter().find_map(copied_grant),
        _ => None,
    }
}

#[test]
fn a_deploy_the_api_started_refuses_what_is_sent_straight_to_temporal() {
    run(async {
        let s = stack().await;
        let api = SecuredApi::start(s, &s.options.dir.join("auth-direct")).await?;
        let client = api.client(None).await?;
        let alice = api.idp.token("alice@example.com", &[], 600)?;
        let service = "auth-direct";
        let (fleet, next) = fleet_of(s, service, service, 2, 100).await?;
        let mut req = request(service, service, next.clone());
        req.deployer = String::new();
        req.batch_plan = BatchPlan { steps: [1, 2].into_iter().map(BatchStep::Count).collect() };
        req.approval = Some(ApprovalPolicy {
            before_batches: vec![2],
            approvers: vec!["bob@example.com".into()],
            quorum: 1,
            allow_self_approval: false,
            expiry_ms: 10 * 60 * 1000,
            on_expiry: OnExpiry::Abort,
        });
        let id = client.clone().start_deploy(bearer(&alice, pb::StartDeployRequest::from(req))).await?.into_inner().deploy_id;
        until(&client, &alice, &id, "the gate before batch 2", |s| s.phase == Phase::AwaitingApproval).await?;

        // Through the API a pause is an update with the API's grant.
        client.clone().pause_deploy(bearer(&alice, control(&id, "", "looking at p99"))).await?;
        assert!(status(&client, &alice, &id).await?.paused);

        // The official CLI straight to Temporal: the signal is refused and audited ...
        let input = r#"{"by": "alice@example.com", "reason": "lgtm"}"#;
        let (code, out, err) = temporal(s, &["workflow", "signal", "--workflow-id", &id, "--name", "resume", "--input", input]).await?;
        assert_eq!(code, Some(0), "Temporal delivers the signal: {out}{err}");
        let refused_signal = until(&client, &alice, &id, "the refusal in the audit", |s| s.audit.iter().any(|e| e.action == Action::Refused)).await?;
        assert!(refused_signal.paused, "the pause holds: {refused_signal:#?}");
        let entry = refused_signal.audit.iter().find(|e| e.action == Action::Refused).expect("refusal");
        assert_eq!((entry.by.as_str(), entry.reason.as_str()), ("alice@example.com", "signal resume refused: this deploy takes control only through the signalbox API"));

        // ... an update without a grant is refused by name and changes nothing ...
        let abort = r#"{"by": "mallory", "reason": "because"}"#;
        let (code, out, err) = temporal(s, &["workflow", "update", "execute", "--workflow-id", &id, "--name", "abort", "--input", abort]).await?;
        assert_ne!(code, Some(0), "{out}");
        assert!(format!("{out}{err}").contains("abort: only the signalbox API may steer this workflow (no grant)"), "{out}{err}");
        // ... and a grant copied out of the history works neither for another operation nor twice.
        let history: serde_json::Value = serde_json::from_str(&s.deploys().await?.history_json(&id).await?)?;
        let grant = copied_grant(&history).expect("the pause's grant is in the history");
        for (name, by) in [("resume_update", "alice@example.com"), ("pause_update", "alice@example.com")] {
            let input = serde_json::json!({"by": by, "reason": "looking at p99", "grant": grant}).to_string();
            let (code, out, err) = temporal(s, &["workflow", "update", "execute", "--workflow-id", &id, "--name", name, "--input", &input]).await?;
            assert_ne!(code, Some(0), "{name}: {out}");
            let said = format!("{out}{err}");
            assert!(said.contains("the grant is not the API's") || said.contains("this grant was used already"), "{name}: {said}");
        }
        let held = status(&client, &alice, &id).await?;
        assert!(held.paused && !held.phase.is_final(), "{held:#?}");

        // The API still steers it, as the principal the token names.
        client.clone().resume_deploy(bearer(&alice, control(&id, "", "p99 is fine"))).await?;
        client.clone().abort_deploy(bearer(&alice, control(&id, "", "the build is superseded"))).await?;
        let done = until(&client, &alice, &id, "the deploy to roll back", |s| s.phase.is_final()).await?;
        assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
        let audit: Vec<(Action, &str)> = done.audit.iter().map(|e| (e.action, e.by.as_str())).collect();
        assert_eq!(audit, [(Action::Pause, "alice@example.com"), (Action::Refused, "alice@example.com"), (Action::Resume, "alice@example.com"), (Action::Abort, "alice@example.com")]);
        signalbox_tests::record_history(&s.deploys().await?, &id, "auth_signed_control").await?;
        drop(fleet);
        api.stop().await
    });
}

/// `POST /webhooks/health` of `body`, signed with `secret` at `at` (Unix seconds) unless `None`.
async fn health_hook(url: &str, body: &str, signed: Option<(&[u8], i64)>) -> anyhow::Result<(u16, String)> {
    use hmac::Mac;
    let mut post = reqwest::Client::new().post(format!("{url}/webhooks/health")).body(body.to_owned());
    if let Some((secret, at)) = signed {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)?;
        mac.update(format!("{at}.{body}").as_bytes());
        post = post.header("X-Signalbox-Timestamp", at.to_string()).header("X-Signalbox-Signature", format!("sha256={}", hex::encode(mac.finalize().into_bytes())));
    }
    let answer = post.send().await?;
    Ok((answer.status().as_u16(), answer.text().await?))
}

#[test]
fn a_signed_health_webhook_rolls_back_the_deploys_in_flight() {
    run(async {
        let s = stack().await;
        let api = SecuredApi::start(s, &s.options.dir.join("auth-webhook")).await?;
        let client = api.client(None).await?;
        let alice = api.idp.token("alice@example.com", &[], 600)?;
        let secret = b"a-webhook-secret-of-at-least-32-bytes".as_slice();
        let key = signalbox_domain::grant::ControlKey::new(&std::fs::read(signalbox_localstack::control_key_file(&s.options))?).map_err(anyhow::Error::msg)?;
        let hooks = signalbox_api::webhooks::Webhooks::new(s.deploys().await?.signing_with(Some(key)), secret).map_err(anyhow::Error::msg)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(signalbox_api::webhooks::serve(listener, signalbox_api::webhooks::Routes::default().health(hooks), async {
            let _ = stopped.await;
        }));

        let service = "auth-hooked";
        let (fleet, next) = fleet_of(s, service, service, 2, 100).await?;
        let mut req = request(service, service, next.clone());
        req.deployer = String::new();
        req.batch_plan = BatchPlan { steps: [1, 2].into_iter().map(BatchStep::Count).collect() };
        req.bake_ms = 10 * 60 * 1000;
        let id = client.clone().start_deploy(bearer(&alice, pb::StartDeployRequest::from(req))).await?.into_inner().deploy_id;
        until(&client, &alice, &id, "the first batch to bake", |s| s.phase == Phase::Baking).await?;

        let body = r#"{"service": "auth-hooked", "reason": "error budget burnt", "source": "pagerduty"}"#;
        let now = chrono::Utc::now().timestamp();
        assert_eq!(health_hook(&url, body, None).await?, (401, "X-Signalbox-Timestamp: is required".into()));
        assert_eq!(health_hook(&url, body, Some((b"another-secret-that-is-long-enough-too", now))).await?, (401, "X-Signalbox-Signature: does not match the body".into()));
        assert_eq!(health_hook(&url, body, Some((secret, now - 3600))).await?, (401, "X-Signalbox-Timestamp: is more than 5 minutes off".into()));
        let held = status(&client, &alice, &id).await?;
        assert_eq!((held.phase, held.audit.len()), (Phase::Baking, 0), "refused calls change nothing");

        let (code, answer) = health_hook(&url, body, Some((secret, now))).await?;
        assert_eq!(code, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer)?;
        assert_eq!(answer["rolled_back"], serde_json::json!([id]));
        assert_eq!(health_hook(&url, body, Some((secret, now))).await?.0, 409, "a replay is refused");

        let done = until(&client, &alice, &id, "the deploy to roll back", |s| s.phase.is_final()).await?;
        assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
        assert_eq!(done.reason.as_deref(), Some("aborted by webhook:pagerduty: health webhook: error budget burnt"));
        assert!(fleet.served_versions().await.iter().all(|v| v.as_deref() == Some("1.0.0")), "every instance back on 1.0.0");
        drop(fleet);
        let _ = stop.send(());
        server.await??;
        api.stop().await
    });
}

#[test]
fn a_release_the_api_started_and_its_deploys_take_control_only_through_it() {
    run(async {
        use signalbox_proto::pb::release_service_client::ReleaseServiceClient;
        let s = stack().await;
        let api = SecuredApi::start(s, &s.options.dir.join("auth-release")).await?;
        let (alice, bob) = (api.idp.token("alice@example.com", &[], 600)?, api.idp.token("bob@example.com", &[], 600)?);
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(api.pki.ca())?));
        let releases = ReleaseServiceClient::new(Channel::from_shared(api.url.clone())?.tls_config(tls)?.connect().await?);
        let deploys = api.client(None).await?;
        let (fleet, next) = fleet_of(s, "auth-rel", "auth-rel-test", 2, 100).await?;
        let pipeline = r#"{"name": "auth-rel", "stages": [{"name": "test", "targets": [{"target": {"name": "auth-rel-test"}, "instances": 2,
            "deploy": {"batch_plan": {"steps": [{"count": 1}, {"count": 2}]}, "bake_ms": 600000, "health": {"samples": 4, "sample_interval_ms": 1000, "min_requests_per_sample": 10}}}],
            "approval": {"approvers": ["bob@example.com"], "quorum": 1, "expiry_ms": 600000}}]}"#;
        let build = pb::ReleaseServiceBuild { service: "auth-rel".into(), artifact: Some(pb::Artifact { digest: next.digest.to_string(), ..Default::default() }), depends_on: vec![] };
        let start = pb::StartReleaseRequest { pipeline_json: pipeline.into(), services: vec![build], ..Default::default() };
        let id = releases.clone().start_release(bearer(&alice, start)).await?.into_inner().release_id;
        let get = |token: &str| bearer(token, pb::GetReleaseRequest { release_id: id.clone() });
        signalbox_devstack::wait_for("the stage gate", DEPLOY_DEADLINE, || async {
            let st = releases.clone().get_release(get(&bob)).await?.into_inner();
            Ok((st.phase() == pb::ReleasePhase::AwaitingApproval).then_some(()))
        })
        .await?;

        // Straight to Temporal: the release's own updates need the API's grant.
        let input = r#"{"approver": "bob@example.com", "reason": "from the side"}"#;
        let (code, out, err) = temporal(s, &["workflow", "update", "execute", "--workflow-id", &id, "--name", "approve", "--input", input]).await?;
        assert_ne!(code, Some(0), "{out}");
        assert!(format!("{out}{err}").contains("approve: only the signalbox API may steer this workflow (no grant)"), "{out}{err}");
        releases.clone().approve_release(bearer(&bob, pb::ApproveReleaseRequest { release_id: id.clone(), approver: String::new(), reason: "fine".into() })).await?;

        // Its deploy inherits the rule: a signal straight to it is refused and audited.
        let child = signalbox_devstack::wait_for("the stage's deploy to bake", DEPLOY_DEADLINE, || async {
            let st = releases.clone().get_release(get(&bob)).await?.into_inner();
            let Some(child) = st.stages.first().and_then(|s| s.deploys.first()).map(|d| d.deploy_id.clone()).filter(|d| !d.is_empty()) else { return Ok(None) };
            Ok(deploys.clone().get_deploy(bearer(&bob, pb::GetDeployRequest { deploy_id: child.clone() })).await.ok().filter(|d| d.get_ref().phase() == pb::Phase::Baking).map(|_| child))
        })
        .await?;
        let (code, out, err) = temporal(s, &["workflow", "signal", "--workflow-id", &child, "--name", "pause", "--input", r#"{"by": "mallory"}"#]).await?;
        assert_eq!(code, Some(0), "{out}{err}");
        let refused = until(&deploys, &bob, &child, "the refusal in the deploy's audit", |d| d.audit.iter().any(|e| e.action == Action::Refused)).await?;
        assert!(!refused.paused, "{refused:#?}");

        // The API aborts it, signed: the release ends Aborted and its deploy rolls back.
        let aborted = releases.clone().abort_release(bearer(&alice, pb::AbortReleaseRequest { release_id: id.clone(), by: String::new(), reason: "superseded".into() })).await?.into_inner();
        assert!(aborted.audit.iter().any(|e| e.by == "alice@example.com"), "{aborted:?}");
        let child_done = until(&deploys, &bob, &child, "the deploy to roll back", |d| d.phase.is_final()).await?;
        assert_eq!(child_done.phase, Phase::RolledBack, "{child_done:#?}");
        signalbox_devstack::wait_for("the release to end", DEPLOY_DEADLINE, || async {
            let st = releases.clone().get_release(get(&bob)).await?.into_inner();
            Ok((st.phase() == pb::ReleasePhase::Aborted).then_some(()))
        })
        .await?;
        signalbox_tests::record_history(&s.deploys().await?, &id, "auth_signed_release").await?;
        drop(fleet);
        api.stop().await
    });
}

/// The real `signalbox-api` process, with `args`, the store of `s`, and its Temporal
/// connection from the environment: `s`'s server unless `temporal` says otherwise.
fn api_process(s: &Stack, dir: &Path, log: &str, args: &[String], temporal: &[(&str, String)]) -> anyhow::Result<signalbox_devstack::ManagedProcess> {
    let mut cmd = std::process::Command::new(signalbox_devstack::workspace_binary("signalbox-api")?);
    cmd.args(args)
        .env("TEMPORAL_ADDRESS", s.server.address())
        .env("TEMPORAL_NAMESPACE", &s.options.namespace)
        .env("SIGNALBOX_HOME", s.home.root())
        .env_remove("SIGNALBOX_STORE")
        .envs(temporal.iter().map(|(k, v)| (*k, v)));
    signalbox_devstack::ManagedProcess::spawn("signalbox-api", cmd, &dir.join(log))
}

/// The API process serving the SCM webhook on `hooks`, following main and release/*.
fn scm_api(s: &Stack, dir: &Path, api: u16, hooks: u16, secret: &Path) -> anyhow::Result<signalbox_devstack::ManagedProcess> {
    let args = [
        "--listen".into(), format!("127.0.0.1:{api}"), "--insecure-no-auth".into(), "--webhooks-listen".into(), format!("127.0.0.1:{hooks}"),
        "--scm-secret-file".into(), secret.display().to_string(), "--scm-branches".into(), "main,release/*".into(),
    ];
    api_process(s, dir, "api.log", &args, &[])
}

/// A GitHub push event of `after` on `git_ref` of acme/shop, pushed now.
fn github_push(git_ref: &str, before: &str, after: &str, message: &str) -> String {
    github_push_at(git_ref, before, after, message, chrono::Utc::now().timestamp())
}

/// A GitHub push event of `after` on `git_ref` of acme/shop, pushed at `pushed_at`.
fn github_push_at(git_ref: &str, before: &str, after: &str, message: &str, pushed_at: i64) -> String {
    serde_json::json!({
        "ref": git_ref, "before": before, "after": after, "deleted": false, "created": false,
        "repository": {"full_name": "acme/shop", "pushed_at": pushed_at},
        "pusher": {"name": "alice", "email": "alice@example.com"}, "sender": {"login": "alice"},
        "head_commit": {"id": after, "message": message, "timestamp": "2026-12-03T10:15:00+01:00"},
        "commits": [{"id": after, "message": message, "timestamp": "2026-12-03T10:15:00+01:00"}],
    })
    .to_string()
}

/// POSTs `body` to the SCM webhook with `headers`; returns the status and the answer.
async fn scm_hook(url: &str, headers: &[(&str, String)], body: &str) -> anyhow::Result<(u16, String)> {
    let mut post = reqwest::Client::new().post(format!("{url}/webhooks/scm")).header("content-type", "application/json").body(body.to_owned());
    for (k, v) in headers {
        post = post.header(*k, v);
    }
    let answer = post.send().await?;
    Ok((answer.status().as_u16(), answer.text().await?))
}

/// GitHub's headers of delivery `id` of `event`, signed with `secret` (`None`: unsigned).
fn github(event: &str, id: &str, secret: Option<&[u8]>, body: &str) -> Vec<(&'static str, String)> {
    use hmac::Mac;
    let mut h = vec![("X-GitHub-Event", event.to_owned()), ("X-GitHub-Delivery", id.to_owned())];
    if let Some(secret) = secret {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key");
        mac.update(body.as_bytes());
        h.push(("X-Hub-Signature-256", format!("sha256={}", hex::encode(mac.finalize().into_bytes()))));
    }
    h
}

/// GitLab's headers of webhook `id` at `at`, signed (Standard Webhooks) with `key`.
fn gitlab(id: &str, at: i64, key: &[u8], body: &str) -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key");
    mac.update(format!("{id}.{at}.{body}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    vec![("X-Gitlab-Event", "Push Hook".into()), ("webhook-id", id.into()), ("webhook-timestamp", at.to_string()), ("webhook-signature", format!("v1,{sig}"))]
}

#[test]
fn a_signed_push_to_a_followed_branch_records_the_commit_and_unsigned_or_replayed_ones_change_nothing() {
    use base64::Engine as _;
    run(async {
        let s = stack().await;
        let dir = s.options.dir.join("auth-scm");
        std::fs::create_dir_all(&dir)?;
        // A GitLab signing token; GitHub signs with the same text as its secret.
        let key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        let token = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&key));
        let secret_file = dir.join("scm.secret");
        std::fs::write(&secret_file, format!("{token}\n"))?;
        let (api_port, hooks_port) = (signalbox_devstack::free_port()?, signalbox_devstack::free_port()?);
        let mut server = scm_api(s, &dir, api_port, hooks_port, &secret_file)?;
        let url = format!("http://127.0.0.1:{hooks_port}");
        signalbox_devstack::wait_for("the webhooks to serve", Duration::from_secs(60), || async { Ok(scm_hook(&url, &[], "{}").await.ok().map(drop)) }).await?;
        let secret = token.as_bytes();
        let (zero, a, b, c) = ("0".repeat(40), "a".repeat(40), "b".repeat(40), "c".repeat(40));

        // GitHub: a ping, then a push to main.
        assert_eq!(scm_hook(&url, &github("ping", "g-0", Some(secret), "{}"), "{}").await?, (200, r#"{"pong":true}"#.into()));
        let main = github_push("refs/heads/main", &zero, &a, "Fix the checkout total\n\nThe tax was counted twice.");
        assert_eq!(scm_hook(&url, &github("push", "g-1", None, &main), &main).await?.0, 401, "unsigned");
        let (code, why) = scm_hook(&url, &github("push", "g-1", Some(b"not-the-secret-but-long-enough-anyway"), &main), &main).await?;
        assert_eq!((code, why.as_str()), (401, "X-Hub-Signature-256: does not match the body"));
        let (code, answer) = scm_hook(&url, &github("push", "g-1", Some(secret), &main), &main).await?;
        assert_eq!(code, 200, "{answer}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&answer)?["recorded"]["sha"], a.as_str());
        assert_eq!(scm_hook(&url, &github("push", "g-1", Some(secret), &main), &main).await?.0, 409, "the same delivery again");
        assert_eq!(scm_hook(&url, &github("push", "g-9", Some(secret), &main), &main).await?.0, 409, "the same signed body under another delivery id");
        // An old signed body is refused however it is labelled: it says when it was pushed.
        let old = github_push_at("refs/heads/main", &a, &b, "Yesterday's push", chrono::Utc::now().timestamp() - 86_400);
        let (code, why) = scm_hook(&url, &github("push", "g-old", Some(secret), &old), &old).await?;
        assert_eq!((code, why.as_str()), (401, "repository.pushed_at: the push is more than an hour old; a replay changes nothing"));
        // Branches not followed, tags and deletions record nothing.
        let feature = github_push("refs/heads/feature/x", &zero, &b, "wip");
        assert_eq!(scm_hook(&url, &github("push", "g-2", Some(secret), &feature), &feature).await?.0, 202);
        let tag = github_push("refs/tags/v1.2.0", &zero, &a, "Fix the checkout total");
        assert_eq!(scm_hook(&url, &github("push", "g-3", Some(secret), &tag), &tag).await?.0, 202);

        // GitLab: a signed push to a release branch; the old plain token, a stale call and a
        // replay are refused.
        let gl = serde_json::json!({
            "object_kind": "push", "ref": "refs/heads/release/2026-12", "before": a, "after": c, "checkout_sha": c,
            "user_username": "bob", "project": {"path_with_namespace": "acme/platform/shop"}, "total_commits_count": 2,
            "commits": [{"id": b, "message": "Add the ledger", "timestamp": "2026-12-03T09:00:00Z"}, {"id": c, "message": "Ship the ledger", "timestamp": "2026-12-03T09:30:00Z"}],
        })
        .to_string();
        let now = chrono::Utc::now().timestamp();
        let plain = vec![("X-Gitlab-Event", "Push Hook".to_owned()), ("X-Gitlab-Token", token.clone())];
        let (code, why) = scm_hook(&url, &plain, &gl).await?;
        assert_eq!(code, 401, "{why}");
        assert!(why.starts_with("webhook-signature: is required"), "{why}");
        assert_eq!(scm_hook(&url, &gitlab("l-1", now - 3600, &key, &gl), &gl).await?, (401, "webhook-timestamp: is more than 5 minutes off".into()));
        let (code, answer) = scm_hook(&url, &gitlab("l-1", now, &key, &gl), &gl).await?;
        assert_eq!(code, 200, "{answer}");
        assert_eq!(scm_hook(&url, &gitlab("l-1", now, &key, &gl), &gl).await?.0, 409, "a replay");

        // What is merged, through the CLI and the API.
        let api = format!("http://127.0.0.1:{api_port}");
        let (code, out, err) = signalbox(&[], &["artifact", "merged", "--api", &api, "--repo", "acme/shop", "--branch", "main", "--json"]).await?;
        assert_eq!(code, Some(0), "{err}");
        let lines: Vec<serde_json::Value> = out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        assert_eq!(lines.len(), 1, "one push recorded on main: {out}");
        let p = &lines[0];
        assert_eq!((p["sha"].as_str(), p["pushed_by"].as_str(), p["message"].as_str(), p["provider"].as_str()), (Some(a.as_str()), Some("alice"), Some("Fix the checkout total"), Some("github")));
        assert_eq!(p["committed_at"], "2026-12-03T09:15:00.000Z");
        let (code, out, err) = signalbox(&[], &["artifact", "merged", "--api", &api, "--repo", "acme/platform/shop", "--branch", "release/2026-12", "--json"]).await?;
        assert_eq!(code, Some(0), "{err}");
        let p: serde_json::Value = serde_json::from_str(out.trim())?;
        assert_eq!((p["sha"].as_str(), p["pushed_by"].as_str(), p["commits"].as_u64(), p["message"].as_str()), (Some(c.as_str()), Some("bob"), Some(2), Some("Ship the ledger")));
        let (code, _, err) = signalbox(&[], &["artifact", "merged", "--api", &api, "--repo", "shop", "--branch", "main"]).await?;
        assert_eq!((code, err.trim()), (Some(2), "error: repo: must be owner/name, 3 to 255 bytes, without spaces"));

        // The record outlives the server: after a restart a replayed delivery is still refused.
        server.terminate(Duration::from_secs(10)).await?;
        let server = scm_api(s, &dir, api_port, hooks_port, &secret_file)?;
        signalbox_devstack::wait_for("the webhooks to serve again", Duration::from_secs(60), || async { Ok(scm_hook(&url, &[], "{}").await.ok().map(drop)) }).await?;
        assert_eq!(scm_hook(&url, &github("push", "g-1", Some(secret), &main), &main).await?.0, 409, "a replay after a restart");
        let merged = s.home.store()?.merged("acme/shop", "main").await?;
        assert_eq!(merged.pushes.len(), 1, "{merged:#?}");
        drop(server);
        Ok(())
    });
}

/// A client of Temporal at `address` from a `temporal.toml` profile (`tls` its TLS table, if
/// any), as the SDK's envconfig reads one, with the environment ignored.
async fn temporal_client_from_profile(address: &str, namespace: &str, tls: Option<String>) -> anyhow::Result<temporalio_client::Client> {
    use temporalio_client::envconfig::{DataSource, LoadClientConfigProfileOptions};
    let mut toml = format!("[profile.default]\naddress = {address:?}\nnamespace = {namespace:?}\n");
    if let Some(tls) = tls {
        toml.push_str(&format!("[profile.default.tls]\n{tls}"));
    }
    let load = LoadClientConfigProfileOptions::builder().config_source(DataSource::Data(toml.into_bytes())).disable_env(true).build();
    let (connection, options) = temporalio_client::ClientOptions::load_from_config(load).map_err(|e| anyhow::anyhow!("the profile: {e}"))?;
    let connection = temporalio_client::Connection::connect(connection).await?;
    Ok(temporalio_client::Client::new(connection, options)?)
}

#[test]
fn the_worker_and_the_api_reach_temporal_over_mutual_tls() {
    run(async {
        use signalbox_devstack::tls_front::{TlsFront, TlsFrontOptions};
        let s = stack().await;
        let dir = s.options.dir.join("temporal-tls");
        let pki = Pki::new(&dir)?;
        let (cert, key) = pki.server("temporal-frontend")?;
        // Temporal's frontend behind TLS that asks every client for a certificate of the CA.
        let front = TlsFront::start(TlsFrontOptions { dir: dir.join("front"), upstream: s.server.address(), cert, key, client_ca: Some(pki.ca()) }).await?;
        let ca = pki.ca().display().to_string();

        // Without a client certificate, or without TLS, nobody gets in.
        let no_cert = format!("server_ca_cert_path = {ca:?}\nserver_name = \"localhost\"\n");
        // (The profiles themselves are read: the connection is what fails.)
        // The first call on the connection fails: the handshake is refused (TLS 1.3 reports it as
        // `CertificateRequired` or as the connection closing, whichever the client reads first).
        for (what, tls) in [("TLS without a client certificate", Some(no_cert)), ("plaintext", None)] {
            let refused = temporal_client_from_profile(&front.address(), &s.options.namespace, tls).await.err().map(|e| format!("{e:#}"));
            assert!(refused.as_deref().is_some_and(|e| e.contains("`get_system_info` call error after connection")), "{what} is refused at the connection: {refused:?}");
        }
        let (wcert, wkey) = pki.client("signalbox-worker", &[])?;
        let with_cert = format!("server_ca_cert_path = {ca:?}\nserver_name = \"localhost\"\nclient_cert_path = {:?}\nclient_key_path = {:?}\n", wcert.display().to_string(), wkey.display().to_string());
        temporal_client_from_profile(&front.address(), &s.options.namespace, Some(with_cert)).await?;

        // A worker and an API that know Temporal only at the TLS front, configured as the
        // SDK's envconfig reads it (`TEMPORAL_TLS_*`), on a task queue only that worker polls.
        let (acert, akey) = pki.client("signalbox-api", &[])?;
        let tls = |cert: &Path, key: &Path| {
            vec![
                ("TEMPORAL_ADDRESS", front.address()),
                ("TEMPORAL_TLS_SERVER_CA_CERT_PATH", ca.clone()),
                ("TEMPORAL_TLS_SERVER_NAME", "localhost".to_owned()),
                ("TEMPORAL_TLS_CLIENT_CERT_PATH", cert.display().to_string()),
                ("TEMPORAL_TLS_CLIENT_KEY_PATH", key.display().to_string()),
            ]
        };
        let queue = "signalbox-over-tls";
        let worker_env = tls(&wcert, &wkey).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let options = signalbox_localstack::StackOptions { task_queue: queue.into(), worker_env, ..s.options.clone() };
        let _worker = signalbox_localstack::spawn_worker(&front.address(), &s.home, &options, "worker-over-tls.log")?;
        let port = signalbox_devstack::free_port()?;
        let args = ["--listen".into(), format!("127.0.0.1:{port}"), "--insecure-no-auth".into(), "--task-queue".into(), queue.into()];
        let _api = api_process(s, &dir, "api-over-tls.log", &args, &tls(&acert, &akey))?;
        let url = format!("http://127.0.0.1:{port}");
        let client = signalbox_devstack::wait_for("the API over TLS to serve", Duration::from_secs(60), || async { Ok(DeployServiceClient::connect(url.clone()).await.ok()) }).await?;

        let service = "tls-rolled";
        let (fleet, next) = fleet_of(s, service, service, 2, 100).await?;
        let mut req = request(service, service, next.clone());
        req.batch_plan = BatchPlan { steps: [1, 2].into_iter().map(BatchStep::Count).collect() };
        let id = client.clone().start_deploy(pb::StartDeployRequest::from(req)).await?.into_inner().deploy_id;
        let done = signalbox_devstack::wait_for("the deploy over TLS to end", DEPLOY_DEADLINE, || async {
            let st = DeployStatus::try_from(client.clone().get_deploy(pb::GetDeployRequest { deploy_id: id.clone() }).await?.into_inner())?;
            Ok(st.phase.is_final().then_some(st))
        })
        .await?;
        assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
        assert!(fleet.served_versions().await.iter().all(|v| v.as_deref() == Some("1.1.0")), "every instance on 1.1.0");
        // The work went to the worker behind TLS: the stack's own worker polls another queue.
        let history = s.deploys().await?;
        let described = history.client().get_workflow_handle::<temporalio_client::UntypedWorkflow>(&id).describe(temporalio_client::WorkflowDescribeOptions::default()).await?;
        assert_eq!(described.task_queue(), queue);
        Ok(())
    });
}

#[test]
fn the_api_and_an_agent_reach_etcd_over_mutual_tls() {
    run(async {
        use signalbox_devstack::etcd::{EtcdServer, EtcdTls};
        use signalbox_proto::pb::target_service_client::TargetServiceClient;
        let s = stack().await;
        let dir = s.options.dir.join("etcd-tls");
        let pki = Pki::new(&dir)?;
        let (cert, key) = pki.server("etcd")?;
        let etcd = EtcdServer::start_tls(&dir.join("etcd"), EtcdTls { cert, key, client_ca: pki.ca() }).await?;
        let url = etcd.url();
        assert!(url.starts_with("https://"), "{url}");
        let ca = pki.ca().display().to_string();
        let tls = |cert: &Path, key: &Path| {
            vec![
                ("SIGNALBOX_ETCD_CA", ca.clone()),
                ("SIGNALBOX_ETCD_CERT", cert.display().to_string()),
                ("SIGNALBOX_ETCD_KEY", key.display().to_string()),
            ]
        };

        // Without a client certificate, or without TLS, etcd takes nothing.
        let anonymous = etcd_client::ConnectOptions::new()
            .with_tls(etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(pki.ca())?)))
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(2));
        let refused = match etcd_client::Client::connect([url.clone()], Some(anonymous)).await {
            Ok(mut c) => c.get("/signalbox", None).await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "a client without a certificate is refused");
        let plain = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2)).with_timeout(Duration::from_secs(2));
        let refused = match etcd_client::Client::connect([url.replace("https://", "http://")], Some(plain)).await {
            Ok(mut c) => c.get("/signalbox", None).await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "plaintext is refused");

        // The API declares a target through it; the agent registers through it.
        let (acert, akey) = pki.client("signalbox-api", &[])?;
        let port = signalbox_devstack::free_port()?;
        let args = ["--listen".into(), format!("127.0.0.1:{port}"), "--insecure-no-auth".into(), "--etcd".into(), url.clone()];
        let _api = api_process(s, &dir, "api-etcd-tls.log", &args, &tls(&acert, &akey))?;
        let api = format!("http://127.0.0.1:{port}");
        let mut targets = signalbox_devstack::wait_for("the API to serve", Duration::from_secs(60), || async { Ok(TargetServiceClient::connect(api.clone()).await.ok()) }).await?;
        let file = "name = \"tls-web\"\nkind = \"agent\"\n[regions.r1]\ncache = \"http://127.0.0.1:9\"\n[[hosts]]\nname = \"h1\"\nregion = \"r1\"\n";
        let declared = targets.apply_target(pb::ApplyTargetRequest { file: file.into() }).await?.into_inner();
        assert_eq!((declared.name.as_str(), declared.hosts.len()), ("tls-web", 1));
        let (gcert, gkey) = pki.client("signalbox-agent", &[])?;
        let mut agent = std::process::Command::new(signalbox_devstack::workspace_binary("signalbox-agent")?);
        agent
            .args(["--target", "tls-web", "--host", "h1", "--region", "r1", "--address", "127.0.0.1", "--port", &signalbox_devstack::free_port()?.to_string(), "--etcd", &url])
            .arg("--dir")
            .arg(dir.join("h1"))
            .envs(tls(&gcert, &gkey));
        let _agent = signalbox_devstack::ManagedProcess::spawn("signalbox-agent", agent, &dir.join("agent.log"))?;
        let host = signalbox_devstack::wait_for("the agent's registration", Duration::from_secs(60), || async {
            let t = targets.clone().get_target(pb::GetTargetRequest { name: "tls-web".into() }).await?.into_inner();
            Ok(t.hosts.into_iter().find(|h| h.name == "h1" && h.registered))
        })
        .await?;
        assert_eq!(host.address, "127.0.0.1");
        Ok(())
    });
}
