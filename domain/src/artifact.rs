//! Artifacts are named by content: a deploy is reproducible from git SHA + artifact digest.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A content digest, `sha256:` followed by 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    const PREFIX: &'static str = "sha256:";

    /// Digest from the raw 32 bytes of a SHA-256 hash.
    pub fn from_sha256_bytes(bytes: &[u8; 32]) -> Self {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("{}{hex}", Self::PREFIX))
    }

    /// The 64 hex digits, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.0[Self::PREFIX.len()..]
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short form for names and logs: the first 12 hex digits.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let hex = s
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| Error::invalid("digest", "must start with `sha256:`"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(Error::invalid("digest", "must be `sha256:` followed by 64 lowercase hex digits"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> Self {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What gets deployed: a content-addressed build, the commit it came from and its version name.
///
/// A request may name the digest alone: version and git SHA then come from the artifact
/// store's record of the build, so they cannot disagree with the bytes. Given ones must match
/// that record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Content digest of the build; the store refuses anything else.
    pub digest: Digest,
    /// The git commit the build was made from (7 to 40 hex digits); empty: from the store.
    #[serde(default)]
    pub git_sha: String,
    /// Human version name, e.g. `1.4.0`; empty: from the store.
    #[serde(default)]
    pub version: String,
}

impl Artifact {
    /// Checks the fields that are not already typed; `prefix` is the field path of the artifact.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let sha = &self.git_sha;
        if !sha.is_empty() && (!(7..=40).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(Error::invalid(format!("{prefix}.git_sha"), "must be 7 to 40 hex digits (or empty: from the artifact store)"));
        }
        if self.version.len() > 64 || (!self.version.is_empty() && self.version.trim().is_empty()) {
            return Err(Error::invalid(format!("{prefix}.version"), "must be 1 to 64 characters (or empty: from the artifact store)"));
        }
        crate::bounds::check_text(&format!("{prefix}.version"), &self.version, 64)
    }

    /// This artifact with the store's `recorded` version and git SHA filled in where the request
    /// left them empty; a given value that disagrees with the record is refused, naming it.
    pub fn resolve(&self, recorded: &Artifact, prefix: &str) -> Result<Artifact> {
        let pick = |field: &str, given: &str, stored: &str| -> Result<String> {
            match (given, stored) {
                ("", "") => Err(Error::invalid(format!("{prefix}.{field}"), "is required: the artifact store has no record of it for this digest")),
                ("", stored) => Ok(stored.to_owned()),
                (given, "") => Ok(given.to_owned()),
                (given, stored) if given == stored => Ok(given.to_owned()),
                (given, stored) => Err(Error::invalid(format!("{prefix}.{field}"), format!("is {given:?}, but the artifact store records {stored:?} for this digest"))),
            }
        };
        Ok(Artifact {
            digest: self.digest.clone(),
            git_sha: pick("git_sha", &self.git_sha, &recorded.git_sha)?,
            version: pick("version", &self.version, &recorded.version)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_accepts_only_lowercase_sha256() {
        let good = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(good.parse::<Digest>().unwrap().short(), "abababababab");
        assert!("sha256:ABAB".parse::<Digest>().is_err());
        assert!(format!("md5:{}", "ab".repeat(32)).parse::<Digest>().is_err());
        assert!(format!("sha256:{}", "AB".repeat(32)).parse::<Digest>().is_err());
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }

    #[test]
    fn digest_from_bytes_round_trips() {
        let d = Digest::from_sha256_bytes(&[0xfe; 32]);
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn a_digest_alone_takes_version_and_git_sha_from_the_store() {
        let digest = Digest::from_sha256_bytes(&[1; 32]);
        let stored = Artifact { digest: digest.clone(), git_sha: "abc1234".into(), version: "1.2.0".into() };
        let bare = Artifact { digest: digest.clone(), git_sha: String::new(), version: String::new() };
        bare.validate("artifact").unwrap();
        assert_eq!(bare.resolve(&stored, "artifact").unwrap(), stored);
        let wrong = Artifact { version: "1.1.0".into(), ..bare.clone() };
        let err = wrong.resolve(&stored, "artifact").unwrap_err();
        assert_eq!(err.to_string(), r#"artifact.version: is "1.1.0", but the artifact store records "1.2.0" for this digest"#);
        let unknown = Artifact { digest, git_sha: String::new(), version: String::new() };
        assert_eq!(bare.resolve(&unknown, "artifact").unwrap_err().field(), "artifact.git_sha");
    }

    #[test]
    fn artifact_validation_names_the_field() {
        let a = Artifact { digest: Digest::from_sha256_bytes(&[1; 32]), git_sha: "xyz".into(), version: "1".into() };
        assert_eq!(a.validate("artifact").unwrap_err().field(), "artifact.git_sha");
    }
}
