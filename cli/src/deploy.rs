//! `signalbox deploy`: a client of the deploy API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use signalbox_domain::DeployStatus;
use signalbox_proto::pb;
use signalbox_proto::pb::deploy_service_client::DeployServiceClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::control::{self, Approval, Operate, Operation};
use crate::progress;

/// Where the deploy API is, and how to prove who calls it.
#[derive(Debug, clap::Args)]
pub struct Api {
    /// URL of the deploy API (`https://` when it serves TLS).
    #[arg(long = "api", env = "SIGNALBOX_API", default_value = "http://127.0.0.1:50051")]
    pub url: String,
    /// An OIDC bearer token (a JWT from your identity provider).
    #[arg(long, env = "SIGNALBOX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the bearer token.
    #[arg(long, env = "SIGNALBOX_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The CA that signed the API's certificate (PEM); default: the system's roots.
    #[arg(long, env = "SIGNALBOX_CA")]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM), for services that authenticate by mutual TLS.
    #[arg(long, env = "SIGNALBOX_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "SIGNALBOX_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
}

/// A connection to the API with the caller's credential on every call.
pub type Conn = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

fn read(flag: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
}

impl Api {
    /// A client of the deploy API.
    pub async fn connect(&self) -> anyhow::Result<DeployServiceClient<Conn>> {
        Ok(DeployServiceClient::with_interceptor(self.channel("deploy").await?, self.bearer()?))
    }

    /// The channel to the API, over TLS for an `https://` URL, with the client certificate if
    /// one is given; `what` names the API in errors.
    pub async fn channel(&self, what: &str) -> anyhow::Result<Channel> {
        let mut endpoint = Channel::from_shared(self.url.clone()).with_context(|| format!("--api: {} is not a URL", self.url))?;
        if self.url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            tls = match &self.ca {
                Some(ca) => tls.ca_certificate(Certificate::from_pem(read("--ca", ca)?)),
                None => tls.with_native_roots(),
            };
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                tls = tls.identity(Identity::from_pem(read("--cert", cert)?, read("--key", key)?));
            }
            endpoint = endpoint.tls_config(tls).context("--ca: the TLS settings cannot be used")?;
        } else if self.cert.is_some() || self.ca.is_some() {
            anyhow::bail!("--api: {} is plaintext; a certificate or CA needs an https:// URL", self.url);
        }
        endpoint.connect().await.with_context(|| format!("connecting to the {what} API at {}", self.url))
    }

    /// The interceptor that sends the bearer token, if any.
    pub fn bearer(&self) -> anyhow::Result<Bearer> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.trim().to_owned()),
            (None, Some(path)) => Some(String::from_utf8(read("--token-file", path)?).context("--token-file: is not text")?.trim().to_owned()),
            (None, None) => None,
        };
        let value = token.map(|t| MetadataValue::try_from(format!("Bearer {t}"))).transpose().context("--token: is not a printable token")?;
        Ok(Bearer(value))
    }
}

/// `signalbox deploy ...`
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Start a deploy; prints its id.
    Start(Box<Start>),
    /// Print a deploy's status as JSON.
    Get {
        #[command(flatten)]
        api: Api,
        /// Deploy id, as printed by `deploy start`.
        id: String,
    },
    /// Follow a deploy until it ends; exits 0 only if it succeeded.
    Watch {
        #[command(flatten)]
        api: Api,
        /// Deploy id, as printed by `deploy start`.
        id: String,
    },
    /// List deploys of a service since a time, newest first (from Temporal's visibility).
    List(crate::history::Which),
    /// Hold a deploy before its next batch (it takes effect at the deploy's next step).
    Pause(Operate),
    /// Lift a pause or a halt (a signal, like pause).
    Resume(Operate),
    /// Freeze a deploy and its fleet where they stand; needs --reason.
    Halt(Operate),
    /// Roll a deploy back now; needs --reason.
    Abort(Operate),
    /// Roll a deploy back, also after success while its rollback window is open; needs --reason.
    Rollback(Operate),
    /// Skip every remaining approval gate, health gate and bake timer; needs --reason.
    Bypass(Operate),
    /// Approve the gate a deploy awaits.
    Approve(Approval),
}

/// How the build moves onto the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StrategyKind {
    /// Batches of instances updated in place (`--batches`).
    Rolling,
    /// Canaries given a growing share of the requests by load-balancer weights.
    Canary,
    /// The idle servers updated and verified, then every request flipped to them.
    BlueGreen,
}

/// What a canary does at 100%.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PromotionKind {
    /// Update the other servers, then restore the original weights.
    UpdateRest,
    /// Leave the canaries serving alone.
    KeepCanary,
}

/// What an expired approval gate does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Expiry {
    /// Roll back what was rolled out.
    Abort,
    /// Go on as if approved.
    Proceed,
}

/// `signalbox deploy start`. Values go to the server as given: it checks them and names the
/// field of any it refuses.
#[derive(Debug, clap::Args)]
pub struct Start {
    #[command(flatten)]
    api: Api,
    /// Service to deploy.
    #[arg(long)]
    service: String,
    /// Target to deploy to (for the local kind: a fleet).
    #[arg(long, alias = "fleet")]
    target: String,
    /// Kind of the target; the server's default is `local`.
    #[arg(long)]
    target_kind: Option<String>,
    /// Digest of the artifact, `sha256:<64 hex digits>`; it must be in the artifact store.
    #[arg(long)]
    artifact_digest: String,
    /// Git commit the artifact was built from; by default the store's record of it.
    #[arg(long, default_value = "")]
    git_sha: String,
    /// Version name of the artifact; by default the store's record of it.
    #[arg(long, default_value = "")]
    version: String,
    /// How the build moves onto the target.
    #[arg(long, value_enum, default_value = "rolling")]
    strategy: StrategyKind,
    /// The load balancer's admin socket (canary, blue-green).
    #[arg(long, value_name = "PATH")]
    lb_socket: Option<String>,
    /// The load balancer's backend whose servers are the target's instances (canary, blue-green).
    #[arg(long)]
    lb_backend: Option<String>,
    /// Servers that become the canary, e.g. `i-0000,i-0001`; by default one in twenty.
    #[arg(long, value_delimiter = ',')]
    canary: Vec<String>,
    /// Canary shares of the requests in percent, e.g. `1,5,25,50,100` (the default).
    #[arg(long, value_delimiter = ',')]
    canary_steps: Vec<f64>,
    /// What a canary does at 100%; the server's default is update-rest.
    #[arg(long, value_enum)]
    promotion: Option<PromotionKind>,
    /// Blue/green verification requests per second per instance; the server's default is 20.
    #[arg(long)]
    verify_rps: Option<u32>,
    /// Length of one health window in milliseconds; the server's default is 2000.
    #[arg(long)]
    health_window_ms: Option<u64>,
    /// Health windows judged per step; the server's default is 5.
    #[arg(long)]
    health_samples: Option<u32>,
    /// Requests a window needs to count; the server's default is 20.
    #[arg(long)]
    health_min_requests: Option<u64>,
    /// When another deploy of the service holds the target, wait for it instead of failing.
    #[arg(long)]
    queue: bool,
    /// Your id for this request (1 to 40 of a-z, 0-9, -): retrying with it finds the deploy
    /// the first try started instead of starting another.
    #[arg(long)]
    request_id: Option<String>,
    /// Cumulative percentages of the fleet per batch; the server's default is 1,10,50,100.
    #[arg(long, value_delimiter = ',', conflicts_with = "batch_counts")]
    batches: Option<Vec<f64>>,
    /// Cumulative instance counts per batch, instead of percentages.
    #[arg(long, value_delimiter = ',')]
    batch_counts: Option<Vec<u32>>,
    /// How long each batch bakes before its health is judged, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    bake_ms: u64,
    /// Who deploys; defaults to $USER.
    #[arg(long, env = "SIGNALBOX_DEPLOYER")]
    deployer: Option<String>,
    /// Plan and record every step without changing an instance.
    #[arg(long)]
    dry_run: bool,
    /// How long after success the deploy can still be rolled back, in milliseconds; the
    /// server's default is an hour, 0 ends the deploy at success.
    #[arg(long)]
    rollback_window_ms: Option<u64>,
    /// Steps (1-based) that wait for approval before they start, e.g. `2,3`: rolling batches,
    /// canary traffic steps, or the blue/green flip (step 1).
    #[arg(long, value_delimiter = ',', requires = "approvers")]
    approve_before: Option<Vec<u32>>,
    /// Who may approve, e.g. `alice,bob`.
    #[arg(long, value_delimiter = ',', requires = "approve_before")]
    approvers: Option<Vec<String>>,
    /// Distinct approvals that open a gate; the server's default is 1.
    #[arg(long, requires = "approve_before")]
    quorum: Option<u32>,
    /// Let the deployer approve their own deploy.
    #[arg(long, requires = "approve_before")]
    allow_self_approval: bool,
    /// How long a gate waits for its quorum, in milliseconds; the server's default is a day.
    #[arg(long, requires = "approve_before")]
    approval_expiry_ms: Option<u64>,
    /// What an expired gate does; the server's default is abort.
    #[arg(long, value_enum, requires = "approve_before")]
    on_expiry: Option<Expiry>,
    /// Judge each step under this analysis policy (JSON, the `policy` of a backtest input; see
    /// analysis/README.md) instead of the default gate preset built from the --health-* flags.
    #[arg(long, value_name = "FILE")]
    analysis_policy: Option<PathBuf>,
    /// Follow the deploy until it ends; exits 0 only if it succeeded.
    #[arg(long)]
    watch: bool,
}

impl Start {
    /// The request as the flags say; only reading the policy file can fail here.
    fn request(&self) -> anyhow::Result<pb::StartDeployRequest> {
        use pb::batch_step::Step;
        let steps: Option<Vec<Step>> = match (&self.batches, &self.batch_counts) {
            (Some(p), _) => Some(p.iter().copied().map(Step::Percent).collect()),
            (None, Some(c)) => Some(c.iter().copied().map(Step::Count).collect()),
            (None, None) => None,
        };
        let deployer = control::operator(self.deployer.clone());
        let deployer = if deployer.is_empty() && !control::credential_given() { "signalbox-cli".into() } else { deployer };
        let approval = self.approve_before.as_ref().map(|batches| pb::ApprovalPolicy {
            before_batches: batches.clone(),
            approvers: self.approvers.clone().unwrap_or_default(),
            quorum: self.quorum,
            allow_self_approval: self.allow_self_approval,
            expiry_ms: self.approval_expiry_ms,
            on_expiry: match self.on_expiry {
                None => pb::OnExpiry::Unspecified,
                Some(Expiry::Abort) => pb::OnExpiry::Abort,
                Some(Expiry::Proceed) => pb::OnExpiry::Proceed,
            }
            .into(),
        });
        // Sent as written: the server parses and checks it, naming the field of any refusal.
        let analysis_policy_json = match &self.analysis_policy {
            Some(path) => std::fs::read_to_string(path).with_context(|| format!("--analysis-policy: reading {}", path.display()))?,
            None => String::new(),
        };
        let lb = || match (&self.lb_socket, &self.lb_backend) {
            (None, None) => None,
            (socket, backend) => Some(pb::LoadBalancer { stats_socket: socket.clone().unwrap_or_default(), backend: backend.clone().unwrap_or_default() }),
        };
        let strategy = match self.strategy {
            StrategyKind::Rolling => None,
            StrategyKind::Canary => Some(pb::strategy::Kind::Canary(pb::CanaryStrategy {
                lb: lb(),
                canary: self.canary.clone(),
                steps: self.canary_steps.clone(),
                promotion: match self.promotion {
                    None => pb::Promotion::Unspecified,
                    Some(PromotionKind::UpdateRest) => pb::Promotion::UpdateRest,
                    Some(PromotionKind::KeepCanary) => pb::Promotion::KeepCanary,
                }
                .into(),
            })),
            StrategyKind::BlueGreen => Some(pb::strategy::Kind::BlueGreen(pb::BlueGreenStrategy { lb: lb(), verify_rps: self.verify_rps })),
        };
        Ok(pb::StartDeployRequest {
            service: self.service.clone(),
            artifact: Some(pb::Artifact { digest: self.artifact_digest.clone(), git_sha: self.git_sha.clone(), version: self.version.clone() }),
            fleet: None,
            target: Some(pb::Target { name: self.target.clone(), kind: self.target_kind.clone().unwrap_or_default() }),
            strategy: strategy.map(|kind| pb::Strategy { kind: Some(kind) }),
            queue: self.queue,
            request_id: self.request_id.clone().unwrap_or_default(),
            batch_plan: steps.map(|s| pb::BatchPlan { steps: s.into_iter().map(|step| pb::BatchStep { step: Some(step) }).collect() }),
            bake_ms: self.bake_ms,
            health: (self.health_window_ms.is_some() || self.health_samples.is_some() || self.health_min_requests.is_some()).then(|| pb::HealthPolicy {
                sample_interval_ms: self.health_window_ms,
                samples: self.health_samples,
                min_requests_per_sample: self.health_min_requests,
                ..Default::default()
            }),
            deployer,
            dry_run: self.dry_run,
            rollback_window_ms: self.rollback_window_ms,
            approval,
            analysis_policy_json,
        })
    }
}

/// Runs a `deploy` subcommand.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Start(start) => {
            let mut client = start.api.connect().await?;
            let started = client.start_deploy(start.request()?).await?.into_inner();
            let id = started.deploy_id;
            println!("{id}");
            if let Some(holder) = started.queued_behind {
                eprintln!("queued behind {holder}, which holds the target");
            }
            if start.watch { watch(&mut client, &id).await } else { Ok(ExitCode::SUCCESS) }
        }
        Command::Get { api, id } => {
            let status = api.connect().await?.get_deploy(pb::GetDeployRequest { deploy_id: id }).await?.into_inner();
            let status = DeployStatus::try_from(status).context("reading the status from the API")?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch { api, id } => watch(&mut api.connect().await?, &id).await,
        Command::List(which) => crate::history::list(which).await,
        Command::Pause(args) => control::operate(Operation::Pause, args).await,
        Command::Resume(args) => control::operate(Operation::Resume, args).await,
        Command::Halt(args) => control::operate(Operation::Halt, args).await,
        Command::Abort(args) => control::operate(Operation::Abort, args).await,
        Command::Rollback(args) => control::operate(Operation::Rollback, args).await,
        Command::Bypass(args) => control::operate(Operation::Bypass, args).await,
        Command::Approve(args) => control::approve(args).await,
    }
}

async fn watch(client: &mut DeployServiceClient<Conn>, id: &str) -> anyhow::Result<ExitCode> {
    let status = progress::follow(client, id).await?;
    Ok(if progress::succeeded(&status) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn parse(args: &str) -> Result<Command, clap::Error> {
        Cli::try_parse_from(["signalbox"].into_iter().chain(args.split_whitespace())).map(|c| c.command)
    }

    const START: &str = "start --service checkout --fleet local --artifact-digest sha256:00 --git-sha abc1234 --version 1.1.0 --deployer dave";

    #[test]
    fn start_sends_the_strategy_and_the_target() {
        let plain = start("");
        assert_eq!((plain.strategy, plain.target.unwrap().name, plain.fleet), (None, "local".to_owned(), None), "rolling by default; --fleet names the target");
        let canary = start("--strategy canary --lb-socket /run/h.sock --lb-backend web --canary i-1,i-2 --canary-steps 10,100 --queue --request-id r-1");
        let Some(pb::strategy::Kind::Canary(c)) = canary.strategy.unwrap().kind else { panic!("not a canary") };
        assert_eq!((c.canary, c.steps, c.lb.unwrap().backend), (vec!["i-1".to_owned(), "i-2".to_owned()], vec![10.0, 100.0], "web".to_owned()));
        assert!(canary.queue);
        assert_eq!(canary.request_id, "r-1");
        let bg = start("--strategy blue-green --lb-socket /run/h.sock --lb-backend web --verify-rps 7");
        let Some(pb::strategy::Kind::BlueGreen(b)) = bg.strategy.unwrap().kind else { panic!("not blue/green") };
        assert_eq!(b.verify_rps, Some(7));
        let tuned = start("--health-window-ms 1000 --health-samples 4").health.unwrap();
        assert_eq!((tuned.sample_interval_ms, tuned.samples, tuned.min_requests_per_sample), (Some(1000), Some(4), None));
        assert_eq!(plain.health, None, "unset: the server's defaults");
        let bare = start("--strategy canary");
        let Some(pb::strategy::Kind::Canary(c)) = bare.strategy.unwrap().kind else { panic!("not a canary") };
        assert_eq!(c.lb, None, "the server names the missing balancer");
    }

    fn start(extra: &str) -> pb::StartDeployRequest {
        match parse(&format!("{START} {extra}")).unwrap() {
            Command::Start(s) => s.request().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn start_sends_the_rollback_window_and_approval_policy() {
        let plain = start("");
        assert_eq!((plain.rollback_window_ms, plain.approval), (None, None), "unset: the server's defaults");
        let req = start(
            "--rollback-window-ms 0 --approve-before 2,3 --approvers alice,bob --quorum 2 --allow-self-approval \
             --approval-expiry-ms 60000 --on-expiry proceed",
        );
        assert_eq!(req.rollback_window_ms, Some(0));
        let expected = pb::ApprovalPolicy {
            before_batches: vec![2, 3],
            approvers: vec!["alice".into(), "bob".into()],
            quorum: Some(2),
            allow_self_approval: true,
            expiry_ms: Some(60_000),
            on_expiry: pb::OnExpiry::Proceed.into(),
        };
        assert_eq!(req.approval, Some(expected));
        let minimal = start("--approve-before 2 --approvers bob").approval.unwrap();
        assert_eq!((minimal.quorum, minimal.expiry_ms, minimal.on_expiry()), (None, None, pb::OnExpiry::Unspecified));
    }

    #[test]
    fn start_sends_the_analysis_policy_file_as_written() {
        assert_eq!(start("").analysis_policy_json, "", "no policy: the first-version gate");
        let file = std::env::temp_dir().join(format!("signalbox-cli-policy-{}.json", std::process::id()));
        let policy = r#"{"metrics": [{"name": "error_rate", "weight": 0}]}"#;
        std::fs::write(&file, policy).unwrap();
        let req = start(&format!("--analysis-policy {}", file.display()));
        std::fs::remove_file(&file).unwrap();
        assert_eq!(req.analysis_policy_json, policy, "the server checks it, not the client");
        let Command::Start(missing) = parse(&format!("{START} --analysis-policy {}", file.display())).unwrap() else { panic!("not a start") };
        let err = missing.request().unwrap_err().to_string();
        assert!(err.starts_with("--analysis-policy: reading "), "{err}");
    }

    #[test]
    fn approval_flags_come_together() {
        for partial in ["--approve-before 2", "--approvers bob", "--quorum 2", "--allow-self-approval", "--on-expiry abort"] {
            let err = parse(&format!("{START} {partial}")).map(|_| ()).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{partial}: {err}");
        }
    }

    #[test]
    fn control_commands_name_the_deploy_who_and_why() {
        let Command::Abort(abort) = parse("abort deploy/x/1 --by oncall --reason bad").unwrap() else { panic!("not an abort") };
        let req = abort.request();
        assert_eq!((req.deploy_id.as_str(), req.by.as_str(), req.reason.as_str()), ("deploy/x/1", "oncall", "bad"));
        let Command::Approve(approve) = parse("approve deploy/x/1 --approver bob").unwrap() else { panic!("not an approval") };
        let req = approve.request();
        assert_eq!((req.deploy_id.as_str(), req.approver.as_str(), req.reason.as_str()), ("deploy/x/1", "bob", ""));
        for op in ["pause", "resume", "halt", "rollback", "bypass"] {
            parse(&format!("{op} deploy/x/1 --by a --reason b")).unwrap();
        }
        assert!(parse("halt").is_err(), "the deploy id is required");
    }
}
