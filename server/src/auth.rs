//! Who is asking, and whether they may: static tokens (kept as SHA-256 hashes) with a role
//! and an optional bundle scope, JWTs from an identity provider (keys and algorithms pinned
//! in the config, roles and scope from claims), and anonymous evaluation from loopback when
//! a profile allows it.

use crate::config::{AuthConfig, JwtAlgorithm, JwtConfig, Role};
use crate::error::ApiError;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;

/// What a request may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read status and stats.
    Read,
    /// Evaluate.
    Evaluate,
    /// Load, roll back, delete bundles; invalidate the cache.
    Operate,
    /// Reload the configuration.
    Admin,
}

impl Role {
    fn allows(self, action: Action) -> bool {
        match self {
            Role::Admin => true,
            Role::Operator => matches!(action, Action::Read | Action::Operate),
            Role::Evaluator => action == Action::Evaluate,
            Role::Viewer => action == Action::Read,
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The credential's name (`anonymous` for loopback development access).
    pub name: String,
    /// No credential was given (loopback development access).
    anonymous: bool,
    /// The rate-limit bucket: the credential, or the address of an anonymous caller.
    pub(crate) rate_key: String,
    /// What it may do: the union of these roles' rights (never empty).
    roles: Vec<Role>,
    bundles: Option<Vec<String>>,
}

impl Principal {
    /// Checks that the caller may do `action` (on `bundle`, when it is about one). Both
    /// refusals are 403 and say nothing of whether the bundle exists.
    pub fn check(&self, action: Action, bundle: Option<&str>) -> Result<(), ApiError> {
        if !self.roles.iter().any(|r| r.allows(action)) {
            if self.anonymous {
                return Err(ApiError::new(
                    "unauthorized",
                    "this needs a credential: send `Authorization: Bearer TOKEN`",
                ));
            }
            return Err(ApiError::new(
                "forbidden",
                format!("credential `{}` may not do this", self.name),
            ));
        }
        if let (Some(scope), Some(bundle)) = (&self.bundles, bundle)
            && !scope.iter().any(|b| b == bundle)
        {
            return Err(ApiError::new(
                "forbidden",
                format!("credential `{}` may not do this", self.name),
            ));
        }
        Ok(())
    }

    /// The caller's most privileged role (whose rate limit applies).
    pub fn role(&self) -> Role {
        self.roles.iter().copied().max().unwrap_or(Role::Viewer)
    }

    /// The bundles the caller is limited to (`None`: all).
    pub fn scope(&self) -> Option<&[String]> {
        self.bundles.as_deref()
    }

    /// Whether the caller may see `bundle` in listings.
    pub fn sees(&self, bundle: &str) -> bool {
        self.bundles
            .as_ref()
            .is_none_or(|scope| scope.iter().any(|b| b == bundle))
    }
}

/// The configured credentials: static tokens by hash, and the JWT keys.
pub struct Authenticator {
    tokens: HashMap<[u8; 32], Principal>,
    jwt: Option<JwtVerifier>,
    anonymous_loopback: bool,
}

impl Authenticator {
    /// From configuration (already validated). Reads the JWT key files: an unreadable or
    /// malformed key is an error naming it.
    pub fn new(config: &AuthConfig) -> Result<Authenticator, String> {
        let tokens = config
            .tokens
            .iter()
            .filter_map(|t| {
                let hash: [u8; 32] = hex::decode(&t.sha256).ok()?.try_into().ok()?;
                Some((
                    hash,
                    Principal {
                        name: t.name.clone(),
                        anonymous: false,
                        rate_key: format!("token:{}", t.name),
                        roles: vec![t.role],
                        bundles: t.bundles.clone(),
                    },
                ))
            })
            .collect();
        Ok(Authenticator {
            tokens,
            jwt: config.jwt.as_ref().map(JwtVerifier::new).transpose()?,
            anonymous_loopback: config.anonymous_loopback_evaluator,
        })
    }

    /// The caller behind an `Authorization` header value (and its address). 401 when there
    /// is none or it is not a known credential.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<SocketAddr>,
    ) -> Result<Principal, ApiError> {
        let Some(header) = authorization else {
            if self.anonymous_loopback
                && let Some(peer) = peer.filter(|p| p.ip().is_loopback())
            {
                return Ok(Principal {
                    name: "anonymous".into(),
                    anonymous: true,
                    rate_key: format!("anonymous:{}", peer.ip()),
                    roles: vec![Role::Evaluator],
                    bundles: None,
                });
            }
            return Err(ApiError::new(
                "unauthorized",
                "no credential: send `Authorization: Bearer TOKEN`",
            ));
        };
        let token = header.strip_prefix(b"Bearer ").ok_or_else(|| {
            ApiError::new("unauthorized", "the Authorization scheme must be Bearer")
        })?;
        let hash: [u8; 32] = Sha256::digest(token).into();
        if let Some(principal) = self.tokens.get(&hash) {
            return Ok(principal.clone());
        }
        match &self.jwt {
            Some(jwt) if token.iter().filter(|&&b| b == b'.').count() == 2 => {
                let token = std::str::from_utf8(token)
                    .map_err(|_| ApiError::new("unauthorized", "the JWT is not text"))?;
                jwt.verify(token)
            }
            _ => Err(ApiError::new("unauthorized", "unknown credential")),
        }
    }
}

/// Verifies JWTs against the configured keys, each pinned to one algorithm.
struct JwtVerifier {
    /// Each key with its `kid` and the validation it applies (built once, not per token).
    keys: Vec<(Option<String>, Validation, DecodingKey)>,
    config: JwtConfig,
}

impl JwtVerifier {
    fn new(config: &JwtConfig) -> Result<JwtVerifier, String> {
        let keys = config
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let at = format!("auth.jwt.keys[{i}].file ({})", k.file.display());
                let bytes = std::fs::read(&k.file).map_err(|e| format!("{at}: {e}"))?;
                let (algorithm, key) = match k.algorithm {
                    JwtAlgorithm::HS256 => {
                        let secret = bytes.trim_ascii();
                        if secret.len() < 32 {
                            return Err(format!(
                                "{at}: an HS256 secret needs at least 32 bytes, this has {}",
                                secret.len()
                            ));
                        }
                        (Algorithm::HS256, DecodingKey::from_secret(secret))
                    }
                    JwtAlgorithm::RS256 => (
                        Algorithm::RS256,
                        DecodingKey::from_rsa_pem(&bytes)
                            .map_err(|e| format!("{at}: not a PEM RSA public key: {e}"))?,
                    ),
                    JwtAlgorithm::EdDSA => (
                        Algorithm::EdDSA,
                        DecodingKey::from_ed_pem(&bytes)
                            .map_err(|e| format!("{at}: not a PEM Ed25519 public key: {e}"))?,
                    ),
                };
                let mut validation = Validation::new(algorithm);
                validation.set_issuer(&[&config.issuer]);
                validation.set_audience(&[&config.audience]);
                validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                validation.validate_nbf = true;
                validation.leeway = config.leeway_s;
                Ok((k.kid.clone(), validation, key))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(JwtVerifier {
            keys,
            config: config.clone(),
        })
    }

    fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let refused = |why: String| ApiError::new("unauthorized", format!("JWT refused: {why}"));
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refused(format!("unreadable header ({e})")))?;
        // A token naming a `kid` is checked with that key only; one naming none, with every
        // key of its algorithm. Either way the algorithm must be the key's.
        let candidates = self.keys.iter().filter(|(kid, validation, _)| {
            validation.algorithms == [header.alg] && (header.kid.is_none() || header.kid == *kid)
        });
        let mut last = None;
        for (_, validation, key) in candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, validation) {
                Ok(data) => return self.principal(data.claims),
                Err(e) => last = Some(e),
            }
        }
        use jsonwebtoken::errors::ErrorKind;
        Err(refused(match last.as_ref().map(|e| e.kind()) {
            None => format!(
                "no configured key for algorithm {:?}{}",
                header.alg,
                header
                    .kid
                    .as_ref()
                    .map_or(String::new(), |k| format!(" and kid `{k}`"))
            ),
            Some(ErrorKind::ExpiredSignature) => "it has expired (exp)".into(),
            Some(ErrorKind::ImmatureSignature) => "it is not valid yet (nbf)".into(),
            Some(ErrorKind::InvalidIssuer) => "wrong issuer (iss)".into(),
            Some(ErrorKind::InvalidAudience) => "wrong audience (aud)".into(),
            Some(ErrorKind::InvalidSignature) => "bad signature".into(),
            Some(ErrorKind::MissingRequiredClaim(c)) => format!("no `{c}` claim"),
            Some(other) => format!("{other:?}"),
        }))
    }

    fn principal(&self, claims: serde_json::Map<String, Value>) -> Result<Principal, ApiError> {
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = format!("jwt:{subject}");
        let names: Vec<&str> = match claims.get(&self.config.roles_claim) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let roles: Vec<Role> = names
            .into_iter()
            .filter_map(|n| serde_json::from_value(Value::String(n.into())).ok())
            .collect();
        if roles.is_empty() {
            return Err(ApiError::new(
                "forbidden",
                format!(
                    "credential `{name}` has no rulebox role in claim `{}`",
                    self.config.roles_claim
                ),
            ));
        }
        let bundles = match claims.get(&self.config.bundles_claim) {
            None => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .filter_map(|b| b.as_str().map(str::to_owned))
                    .collect(),
            ),
            Some(Value::String(b)) => Some(vec![b.clone()]),
            // A scope claim that is neither: trust it with nothing rather than everything.
            Some(_) => Some(Vec::new()),
        };
        Ok(Principal {
            rate_key: name.clone(),
            name,
            anonymous: false,
            roles,
            bundles,
        })
    }
}

/// A new random token (32 bytes, hex, prefixed `rbx_`) and the SHA-256 to configure.
pub fn new_token() -> Result<(String, String), String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    let token = format!("rbx_{}", hex::encode(bytes));
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    Ok((token, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_they_say() {
        use Action::*;
        let table = [
            (Role::Viewer, [true, false, false, false]),
            (Role::Evaluator, [false, true, false, false]),
            (Role::Operator, [true, false, true, false]),
            (Role::Admin, [true, true, true, true]),
        ];
        for (role, expect) in table {
            let got = [Read, Evaluate, Operate, Admin].map(|a| role.allows(a));
            assert_eq!(got, expect, "{role:?}");
        }
    }

    #[test]
    fn tokens_are_recognised_by_hash_and_nothing_else() {
        let (token, hash) = new_token().unwrap();
        assert!(token.starts_with("rbx_") && hash.len() == 64);
        let auth = Authenticator::new(&AuthConfig {
            tokens: vec![crate::config::TokenConfig {
                name: "svc".into(),
                sha256: hash.clone(),
                role: Role::Evaluator,
                bundles: Some(vec!["payments".into()]),
            }],
            jwt: None,
            anonymous_loopback_evaluator: false,
        })
        .unwrap();
        let bearer = format!("Bearer {token}");
        let p = auth.authenticate(Some(bearer.as_bytes()), None).unwrap();
        assert_eq!(p.name, "svc");
        assert!(p.check(Action::Evaluate, Some("payments")).is_ok());
        assert_eq!(
            p.check(Action::Evaluate, Some("other")).unwrap_err().kind,
            "forbidden"
        );
        assert_eq!(
            p.check(Action::Operate, Some("payments")).unwrap_err().kind,
            "forbidden"
        );
        let hash_as_token = format!("Bearer {hash}");
        for bad in [
            hash_as_token.as_bytes(),
            b"Basic abc".as_slice(),
            b"Bearer ",
        ] {
            assert_eq!(
                auth.authenticate(Some(bad), None).unwrap_err().kind,
                "unauthorized"
            );
        }
        let local: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(
            auth.authenticate(None, Some(local)).unwrap_err().kind,
            "unauthorized"
        );
    }
}
