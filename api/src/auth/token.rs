//! People's credentials: OIDC bearer tokens (JWTs) checked against the identity provider's
//! published keys (a JWKS): signature, issuer, audience, expiry and not-before.

use std::path::Path;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Error, Principal, Via, canonical};

/// Longest token the API reads: a real one is 1-4 KiB.
const MAX_TOKEN: usize = 16 * 1024;

/// How tokens are checked (`[oidc]` of the auth file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oidc {
    /// The `iss` every token must carry: the identity provider's URL.
    pub issuer: String,
    /// The `aud` every token must carry: the name the provider gives signalbox.
    pub audience: String,
    /// The provider's signing keys: a JWKS file (relative to the auth file).
    pub jwks: std::path::PathBuf,
    /// The claim that names the person; default `email`, falling back to `sub`.
    #[serde(default = "email")]
    pub identity_claim: String,
    /// The claim that lists the person's groups; default `groups`.
    #[serde(default = "groups")]
    pub groups_claim: String,
}

fn email() -> String {
    "email".into()
}

fn groups() -> String {
    "groups".into()
}

/// Checks bearer tokens.
#[derive(Clone)]
pub struct Verifier {
    oidc: Oidc,
    keys: JwkSet,
}

impl Verifier {
    /// Reads the key set of `oidc`, its path relative to `base`.
    pub fn load(oidc: Oidc, base: &Path) -> Result<Self, Error> {
        let path = base.join(&oidc.jwks);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Config(format!("oidc.jwks: cannot read {}: {e}", path.display())))?;
        let keys: JwkSet = serde_json::from_str(&text).map_err(|e| Error::Config(format!("oidc.jwks: {} is not a JWKS: {e}", path.display())))?;
        if keys.keys.is_empty() {
            return Err(Error::Config(format!("oidc.jwks: {} holds no keys", path.display())));
        }
        for (i, jwk) in keys.keys.iter().enumerate() {
            algorithms(jwk).map_err(|rule| Error::Config(format!("oidc.jwks: keys[{i}]: {rule}")))?;
        }
        Ok(Self { oidc, keys })
    }

    /// The person `token` names, or why it is refused (the caller sees this).
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        if token.len() > MAX_TOKEN {
            return Err(format!("the bearer token is longer than {MAX_TOKEN} bytes"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("the bearer token is not a JWT: {e}"))?;
        let jwk = match &header.kid {
            Some(kid) => self.keys.find(kid).ok_or_else(|| format!("the bearer token is signed by an unknown key ({kid})"))?,
            None if self.keys.keys.len() == 1 => &self.keys.keys[0],
            None => return Err("the bearer token names no key (kid)".into()),
        };
        let mut validation = Validation::new(header.alg);
        validation.algorithms = algorithms(jwk).map_err(|e| format!("the bearer token's key: {e}"))?;
        validation.set_issuer(&[&self.oidc.issuer]);
        validation.set_audience(&[&self.oidc.audience]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("the bearer token's key: {e}"))?;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| format!("the bearer token is refused: {e}"))?.claims;
        let id = [self.oidc.identity_claim.as_str(), "sub"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str).filter(|s| !s.trim().is_empty()))
            .ok_or_else(|| format!("the bearer token has no {} or sub claim", self.oidc.identity_claim))?;
        let groups = match claims.get(&self.oidc.groups_claim) {
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(canonical).collect(),
            _ => Vec::new(),
        };
        Ok(Principal { id: canonical(id), groups, via: Via::Token })
    }
}

/// The algorithms a key may sign with: its own `alg`, or its family's. Shared-secret (HMAC)
/// keys are refused: a JWKS is public, so anyone could sign with one.
fn algorithms(jwk: &Jwk) -> Result<Vec<Algorithm>, String> {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    let family: &[Algorithm] = match &jwk.algorithm {
        P::RSA(_) => &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512],
        P::EllipticCurve(_) => &[Algorithm::ES256, Algorithm::ES384],
        P::OctetKeyPair(_) => &[Algorithm::EdDSA],
        P::OctetKey(_) => return Err("is a shared secret (kty oct): signalbox takes public keys only".into()),
        _ => return Err("is of a key type signalbox does not take (RSA, EC or OKP)".into()),
    };
    match jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok()) {
        Some(alg) if family.contains(&alg) => Ok(vec![alg]),
        Some(alg) => Err(format!("its alg {alg:?} does not fit its key type")),
        None => Ok(family.to_vec()),
    }
}
