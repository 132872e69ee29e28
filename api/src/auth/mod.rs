//! Who calls, and what they may do.
//!
//! Every call is authenticated: people by an OIDC bearer token (`authorization: Bearer <jwt>`,
//! checked against the provider's JWKS), services by a client certificate from the configured
//! CA (mutual TLS). The principal comes from the credential, never from a request field: a
//! request that names someone else in `by`, `deployer` or `approver` is refused. What a
//! principal may do is the [`Policy`]'s decision, scoped by service, target and channel.
//!
//! [`Authority::open`] turns all of it off, for a server on loopback in a test or the demo; the
//! `signalbox-api` binary never starts that way unless told so in words
//! (`--insecure-no-auth`).

pub mod policy;
mod token;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use signalbox_domain::grant::ControlKey;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Status};

pub use policy::{Policy, Role, Scope};
pub use token::Oidc;

/// Why the auth configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file, or a file it names, is missing or breaks a rule; the message names the field.
    #[error("auth config: {0}")]
    Config(String),
}

/// How a principal proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// An OIDC bearer token.
    Token,
    /// A client certificate (mutual TLS).
    Certificate,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who, canonical ([`canonical`]): a token's `email` (or `sub`), a certificate's common name.
    pub id: String,
    /// Their groups, canonical: a token's `groups` claim, a certificate's organisational units.
    pub groups: Vec<String>,
    /// How they proved it.
    pub via: Via,
}

/// The form identities are compared in: trimmed and lower-case, so `"Alice "` is `alice`.
pub fn canonical(id: &str) -> String {
    id.trim().to_lowercase()
}

/// The auth file of `signalbox-api --auth <file>` (TOML); paths are relative to the file.
///
/// ```toml
/// policy = "policy.toml"
///
/// [tls]
/// cert = "api.pem"
/// key = "api-key.pem"
/// client_ca = "ca.pem"        # optional: services authenticate by certificate
///
/// [oidc]                      # optional: people authenticate by token
/// issuer = "https://login.example.com"
/// audience = "signalbox"
/// jwks = "jwks.json"
///
/// control_key = "control.key"  # shared with the workers: see `signalbox_domain::grant`
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The policy file.
    pub policy: PathBuf,
    /// The server's certificate and key, and the CA of client certificates.
    pub tls: Tls,
    /// How people's tokens are checked.
    pub oidc: Option<Oidc>,
    /// The key shared with the workers (at least 32 bytes): the API signs every operation it
    /// lets through, and deploys it starts take no other. Without it, anyone on Temporal's
    /// port can still steer them.
    pub control_key: Option<PathBuf>,
}

/// The `[tls]` section: tokens never travel in plaintext.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA whose certificates authenticate services (PEM).
    pub client_ca: Option<PathBuf>,
}

fn read(base: &Path, field: &str, path: &Path) -> Result<Vec<u8>, Error> {
    let path = base.join(path);
    std::fs::read(&path).map_err(|e| Error::Config(format!("{field}: cannot read {}: {e}", path.display())))
}

/// What a server needs to authenticate and authorise calls: the [`Authority`] its handlers
/// ask, and the TLS its transport serves.
pub struct Security {
    /// Who may do what.
    pub authority: Authority,
    /// The transport's TLS; `None` serves plaintext (only with [`Authority::open`]).
    pub tls: Option<ServerTlsConfig>,
    /// The key that signs the operations the API lets through.
    pub control_key: Option<ControlKey>,
}

impl Security {
    /// No authentication and plaintext: for a server on loopback in tests and the demo.
    pub fn open() -> Self {
        Self { authority: Authority::open(), tls: None, control_key: None }
    }

    /// Reads the auth file at `path` and everything it names.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let de = toml::Deserializer::parse(&text).map_err(|e| Error::Config(e.message().to_owned()))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let (path, rule) = (e.path().to_string(), e.inner().message().to_owned());
            // serde names a missing field in the message, on the table that lacks it.
            match rule.strip_prefix("missing field `").and_then(|r| r.strip_suffix('`')) {
                Some(name) if path == "." => Error::Config(format!("{name}: is required")),
                Some(name) => Error::Config(format!("{path}.{name}: is required")),
                None => Error::Config(format!("{path}: {rule}")),
            }
        })?;
        Self::from_config(config, path.parent().unwrap_or(Path::new(".")))
    }

    /// [`Self::load`] of a config already read, its paths relative to `base`.
    pub fn from_config(config: Config, base: &Path) -> Result<Self, Error> {
        let policy_text = read(base, "policy", &config.policy)?;
        let policy = Policy::parse(&String::from_utf8_lossy(&policy_text))?;
        let identity = Identity::from_pem(read(base, "tls.cert", &config.tls.cert)?, read(base, "tls.key", &config.tls.key)?);
        let mut tls = ServerTlsConfig::new().identity(identity);
        let certificates = config.tls.client_ca.is_some();
        if let Some(ca) = &config.tls.client_ca {
            // Optional at the handshake when people may come with a token instead; a call
            // with neither is refused by the handler, naming what it lacks.
            tls = tls.client_ca_root(Certificate::from_pem(read(base, "tls.client_ca", ca)?)).client_auth_optional(config.oidc.is_some());
        }
        let tokens = config.oidc.map(|oidc| token::Verifier::load(oidc, base)).transpose()?;
        if tokens.is_none() && !certificates {
            return Err(Error::Config("nobody could authenticate: configure [oidc], tls.client_ca, or both".into()));
        }
        // rustls is built with two crypto providers in this workspace; say which one serves.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let control_key = config
            .control_key
            .map(|path| ControlKey::new(&read(base, "control_key", &path)?).map_err(|rule| Error::Config(format!("control_key: {rule}"))))
            .transpose()?;
        Ok(Self { authority: Authority(Arc::new(Inner::Enforced { tokens, certificates, policy })), tls: Some(tls), control_key })
    }
}

enum Inner {
    Open,
    Enforced { tokens: Option<token::Verifier>, certificates: bool, policy: Policy },
}

/// Authenticates calls and asks the policy; cheap to clone.
#[derive(Clone)]
pub struct Authority(Arc<Inner>);

impl Authority {
    /// Lets every call through and takes names from the request, as a server without auth did.
    pub fn open() -> Self {
        Self(Arc::new(Inner::Open))
    }

    /// The caller of `request`, or `UNAUTHENTICATED` naming what is missing or wrong;
    /// `None` on an open server.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Option<Principal>, Status> {
        let Inner::Enforced { tokens, certificates, .. } = &*self.0 else { return Ok(None) };
        if let Some(value) = request.metadata().get("authorization") {
            let Some(tokens) = tokens else {
                return Err(Status::unauthenticated("this server takes no bearer tokens: authenticate with a client certificate"));
            };
            let value = value.to_str().map_err(|_| Status::unauthenticated("authorization: must be `Bearer <token>`"))?;
            let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).ok_or_else(|| Status::unauthenticated("authorization: must be `Bearer <token>`"))?;
            return tokens.verify(token.trim()).map(Some).map_err(Status::unauthenticated);
        }
        if *certificates && let Some(chain) = request.peer_certs() && let Some(leaf) = chain.first() {
            return certificate_principal(leaf).map(Some).map_err(Status::unauthenticated);
        }
        let how = match (tokens.is_some(), *certificates) {
            (true, true) => "a bearer token (authorization: Bearer <jwt>) or a client certificate",
            (true, false) => "a bearer token (authorization: Bearer <jwt>)",
            _ => "a client certificate",
        };
        Err(Status::unauthenticated(format!("no credential: this server needs {how}")))
    }

    /// Authenticates `request`'s caller and checks that they hold `role` within every one of
    /// `scopes` ([`Self::permit`]).
    pub fn allow<T>(&self, request: &Request<T>, role: Role, scopes: &[Scope<'_>], field: &str, claimed: &str) -> Result<String, Status> {
        self.permit(self.caller(request)?.as_ref(), role, scopes, field, claimed)
    }

    /// Checks that `caller` holds `role` within every one of `scopes`. A non-empty `claimed`
    /// name (the request's `field`, such as `by`) must be the caller's own. Returns the name to
    /// record: the principal's, or on an open server (no caller) `claimed` as sent.
    pub fn permit(&self, caller: Option<&Principal>, role: Role, scopes: &[Scope<'_>], field: &str, claimed: &str) -> Result<String, Status> {
        let (Some(who), Inner::Enforced { policy, .. }) = (caller, &*self.0) else { return Ok(claimed.to_owned()) };
        if !claimed.trim().is_empty() && canonical(claimed) != who.id {
            return Err(Status::permission_denied(format!("{field}: you are authenticated as {}; a call cannot act as {claimed:?}", who.id)));
        }
        // Nothing to scope the call by still needs the role somewhere: never allow on nothing.
        let anywhere = [Scope::default()];
        let scopes = if scopes.is_empty() { &anywhere[..] } else { scopes };
        if let Some(scope) = scopes.iter().find(|s| !policy.allows(who, role, s)) {
            return Err(Status::permission_denied(format!("{} lacks the role {role} for {scope}", who.id)));
        }
        Ok(who.id.clone())
    }

    /// Authenticates `request`'s caller for a read, which every authenticated principal may do.
    pub fn read<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.caller(request).map(drop)
    }

    /// Whether calls go unauthenticated.
    pub fn is_open(&self) -> bool {
        matches!(&*self.0, Inner::Open)
    }
}

/// A service named by its certificate (already verified against the client CA by the TLS
/// handshake): its common name, and its organisational units as groups.
fn certificate_principal(der: &[u8]) -> Result<Principal, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("the client certificate cannot be read: {e}"))?;
    let subject = cert.subject();
    let id = subject.iter_common_name().find_map(|cn| cn.as_str().ok()).filter(|cn| !cn.trim().is_empty()).ok_or("the client certificate has no common name (CN)")?;
    let groups = subject.iter_organizational_unit().filter_map(|ou| ou.as_str().ok()).map(canonical).collect();
    Ok(Principal { id: canonical(id), groups, via: Via::Certificate })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_compare_trimmed_and_in_lower_case() {
        assert_eq!(canonical(" Alice@Example.COM "), "alice@example.com");
        assert_eq!(canonical("alice "), canonical("alice"));
    }

    #[test]
    fn a_bad_auth_file_names_the_field_and_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Security::load(&file).err().expect("refused").to_string()
        };
        assert_eq!(load("policy = \"p.toml\"\n"), "auth config: tls: is required");
        assert_eq!(load("policy = \"p.toml\"\n[tls]\ncert = \"c.pem\"\n"), "auth config: tls.key: is required");
        assert!(load("policy = \"p.toml\"\n[tls]\ncert = \"c\"\nkey = \"k\"\nca = \"x\"\n").starts_with("auth config: tls.ca: unknown field `ca`"));
        std::fs::write(dir.path().join("p.toml"), "").unwrap();
        assert!(load("policy = \"p.toml\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n").starts_with("auth config: tls.cert: cannot read"));
    }

    #[test]
    fn an_open_server_takes_the_name_the_request_sends() {
        let auth = Authority::open();
        let request = Request::new(());
        assert_eq!(auth.allow(&request, Role::Bypass, &[Scope::service("x")], "by", "alice").unwrap(), "alice");
        assert!(auth.is_open());
    }
}
