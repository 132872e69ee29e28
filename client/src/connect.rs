//! The Temporal connection, from the SDK's envconfig: `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`,
//! `TEMPORAL_PROFILE` and `temporal.toml`, like the `temporal` CLI. No namespace is hard-coded.

use temporalio_client::envconfig::LoadClientConfigProfileOptions;
use temporalio_client::{Client, ClientOptions, Connection};

use crate::{Error, Result};

/// A client configured from the environment (envconfig profile, `TEMPORAL_*`).
pub async fn connect() -> Result<Client> {
    connect_with(None, None).await
}

/// A client of the server at `address` (`host:port`), with everything else (namespace, TLS,
/// API key) from the environment as [`connect`] reads it.
pub async fn connect_to(address: &str) -> Result<Client> {
    connect_with(Some(address), None).await
}

/// A client from the environment, with the server's `address` and the `namespace`, when given,
/// in place of what the environment says.
pub async fn connect_with(address: Option<&str>, namespace: Option<&str>) -> Result<Client> {
    let (mut connection, mut options) = ClientOptions::load_from_config(LoadClientConfigProfileOptions::default())
        .map_err(|e| Error::Unavailable(format!("loading the Temporal client configuration (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, temporal.toml): {e}")))?;
    if let Some(namespace) = namespace {
        options.namespace = namespace.to_owned();
    }
    if let Some(address) = address {
        let scheme = if connection.tls_options.is_some() { "https" } else { "http" };
        connection.target = format!("{scheme}://{address}")
            .parse()
            .map_err(|e| Error::Invalid { field: "address".into(), rule: format!("{address:?} is not a Temporal address (host:port): {e}") })?;
    }
    let target = connection.target.clone();
    let connection = Connection::connect(connection).await.map_err(|e| Error::Unavailable(format!("connecting to Temporal at {target}: {e}")))?;
    Client::new(connection, options).map_err(|e| Error::Unavailable(format!("a client of Temporal at {target}: {e}")))
}
