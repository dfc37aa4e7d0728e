//! Who is asking, and whether they may: static tokens (kept as SHA-256 hashes) with a role
//! and an optional bundle scope; anonymous evaluation from loopback when a profile allows it.

use crate::config::{AuthConfig, Role};
use crate::error::ApiError;
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
    #[allow(
        dead_code,
        reason = "the config-reload endpoint, not yet built, is its user"
    )]
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
    role: Role,
    bundles: Option<Vec<String>>,
}

impl Principal {
    /// Checks that the caller may do `action` (on `bundle`, when it is about one). Both
    /// refusals are 403 and say nothing of whether the bundle exists.
    pub fn check(&self, action: Action, bundle: Option<&str>) -> Result<(), ApiError> {
        if !self.role.allows(action) {
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

    /// The caller's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the caller may see `bundle` in listings.
    pub fn sees(&self, bundle: &str) -> bool {
        self.bundles
            .as_ref()
            .is_none_or(|scope| scope.iter().any(|b| b == bundle))
    }
}

/// The configured credentials, by token hash.
pub struct Authenticator {
    tokens: HashMap<[u8; 32], Principal>,
    anonymous_loopback: bool,
}

impl Authenticator {
    /// From configuration (already validated).
    pub fn new(config: &AuthConfig) -> Authenticator {
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
                        role: t.role,
                        bundles: t.bundles.clone(),
                    },
                ))
            })
            .collect();
        Authenticator {
            tokens,
            anonymous_loopback: config.anonymous_loopback_evaluator,
        }
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
                    role: Role::Evaluator,
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
        self.tokens
            .get(&hash)
            .cloned()
            .ok_or_else(|| ApiError::new("unauthorized", "unknown credential"))
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
            anonymous_loopback_evaluator: false,
        });
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
