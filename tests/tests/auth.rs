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
        let (code, out, err) = signalbox(&env, &["deploy", "list", "--api", &api.url, "--service", service, "--since", "1h", "--phase", "succeeded"]).await?;
        assert_eq!((code, out.as_str()), (Some(0), ""), "no deploy of it succeeded: {err}");
        let (code, out, err) = signalbox(&env, &["audit", "--api", &api.url, "--service", service, "--since", "1h"]).await?;
        assert_eq!(code, Some(0), "{err}");
        let actions: Vec<&str> = out.lines().map(|l| l.split_once(&format!("{id}  ")).map_or(l, |(_, rest)| rest)).collect();
        assert_eq!(actions.len(), 3, "{out}");
        assert!(actions[0].starts_with("start by alice@example.com: sha256:"), "{out}");
        assert_eq!(&actions[1..], ["approve by bob@example.com: canary is clean", "abort by ci-bot: the release train was cancelled"], "{out}");
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
        let server = tokio::spawn(signalbox_api::webhooks::serve(listener, hooks, async {
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
