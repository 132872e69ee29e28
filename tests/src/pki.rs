//! Credentials made by the tests themselves: a CA with server and client certificates, and an
//! identity provider whose signed tokens the API checks against its published keys (JWKS).

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

/// A certificate authority writing its certificates as PEM files into a directory.
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA, its certificate at [`Self::ca`].
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "signalbox test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        std::fs::write(dir.join("ca.pem"), ca.pem())?;
        Ok(Self { dir: dir.to_owned(), ca })
    }

    /// The CA's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate for 127.0.0.1 and localhost: its certificate and key files.
    pub fn server(&self, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(name, params)
    }

    /// A client certificate with common name `cn` and organisational units `units`.
    pub fn client(&self, cn: &str, units: &[&str]) -> anyhow::Result<(PathBuf, PathBuf)> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        for unit in units {
            params.distinguished_name.push(DnType::OrganizationalUnitName, *unit);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(cn, params)
    }

    fn issue(&self, name: &str, params: CertificateParams) -> anyhow::Result<(PathBuf, PathBuf)> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let (cert_path, key_path) = (self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}-key.pem")));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok((cert_path, key_path))
    }
}

/// An OIDC identity provider: an ES256 signing key and the tokens it signs.
pub struct Idp {
    /// The `iss` of its tokens.
    pub issuer: String,
    /// The `aud` of its tokens.
    pub audience: String,
    kid: String,
    key: EncodingKey,
}

impl Idp {
    /// A provider with a fresh key named `kid`.
    pub fn new(issuer: &str, audience: &str, kid: &str) -> anyhow::Result<Self> {
        let key = EncodingKey::from_ec_der(&KeyPair::generate()?.serialize_der());
        Ok(Self { issuer: issuer.into(), audience: audience.into(), kid: kid.into(), key })
    }

    /// Its published keys, as a JWKS document.
    pub fn jwks(&self) -> anyhow::Result<String> {
        let mut jwk = Jwk::from_encoding_key(&self.key, Algorithm::ES256)?;
        jwk.common.key_id = Some(self.kid.clone());
        Ok(serde_json::to_string(&JwkSet { keys: vec![jwk] })?)
    }

    /// A token for `email` in `groups`, valid for `ttl_s` seconds (negative: expired).
    pub fn token(&self, email: &str, groups: &[&str], ttl_s: i64) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        self.sign(&serde_json::json!({
            "iss": self.issuer, "aud": self.audience, "sub": format!("id-{email}"), "email": email,
            "groups": groups, "iat": now, "exp": now + ttl_s,
        }))
    }

    /// A token of exactly these claims.
    pub fn sign(&self, claims: &serde_json::Value) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }
}
