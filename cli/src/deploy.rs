//! `signalbox deploy`: a client of the deploy API.

use std::process::ExitCode;

use anyhow::Context;
use signalbox_domain::DeployStatus;
use signalbox_proto::pb;
use signalbox_proto::pb::deploy_service_client::DeployServiceClient;
use tonic::transport::Channel;

use crate::progress;

/// Where the deploy API is.
#[derive(Debug, clap::Args)]
pub struct Api {
    /// URL of the deploy API.
    #[arg(long = "api", env = "SIGNALBOX_API", default_value = "http://127.0.0.1:50051")]
    pub url: String,
}

impl Api {
    /// A client of the API.
    pub async fn connect(&self) -> anyhow::Result<DeployServiceClient<Channel>> {
        DeployServiceClient::connect(self.url.clone()).await.with_context(|| format!("connecting to the deploy API at {}", self.url))
    }
}

/// `signalbox deploy ...`
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Start a deploy; prints its id.
    Start(Start),
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
    /// Fleet to deploy to.
    #[arg(long)]
    fleet: String,
    /// Digest of the artifact, `sha256:<64 hex digits>`; it must be in the artifact store.
    #[arg(long)]
    artifact_digest: String,
    /// Git commit the artifact was built from.
    #[arg(long)]
    git_sha: String,
    /// Version name of the artifact.
    #[arg(long)]
    version: String,
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
    /// Follow the deploy until it ends; exits 0 only if it succeeded.
    #[arg(long)]
    watch: bool,
}

impl Start {
    fn request(&self) -> pb::StartDeployRequest {
        use pb::batch_step::Step;
        let steps: Option<Vec<Step>> = match (&self.batches, &self.batch_counts) {
            (Some(p), _) => Some(p.iter().copied().map(Step::Percent).collect()),
            (None, Some(c)) => Some(c.iter().copied().map(Step::Count).collect()),
            (None, None) => None,
        };
        let deployer = self.deployer.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "signalbox-cli".into());
        pb::StartDeployRequest {
            service: self.service.clone(),
            artifact: Some(pb::Artifact { digest: self.artifact_digest.clone(), git_sha: self.git_sha.clone(), version: self.version.clone() }),
            fleet: Some(pb::FleetTarget { name: self.fleet.clone() }),
            batch_plan: steps.map(|s| pb::BatchPlan { steps: s.into_iter().map(|step| pb::BatchStep { step: Some(step) }).collect() }),
            bake_ms: self.bake_ms,
            health: None,
            deployer,
            dry_run: self.dry_run,
        }
    }
}

/// Runs a `deploy` subcommand.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Start(start) => {
            let mut client = start.api.connect().await?;
            let id = client.start_deploy(start.request()).await?.into_inner().deploy_id;
            println!("{id}");
            if start.watch { watch(&mut client, &id).await } else { Ok(ExitCode::SUCCESS) }
        }
        Command::Get { api, id } => {
            let status = api.connect().await?.get_deploy(pb::GetDeployRequest { deploy_id: id }).await?.into_inner();
            let status = DeployStatus::try_from(status).context("reading the status from the API")?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch { api, id } => watch(&mut api.connect().await?, &id).await,
    }
}

async fn watch(client: &mut DeployServiceClient<Channel>, id: &str) -> anyhow::Result<ExitCode> {
    let status = progress::follow(client, id).await?;
    Ok(if progress::succeeded(&status) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
