//! Who may use the admin API: bearer tokens with a name and a role.
//!
//! `admin.token` (one operator token, named `admin`) and `[[admin.tokens]]` (named tokens
//! with a role each) are resolved by [`crate::config::load`] into [`ApiToken`]s. With no
//! token configured the API is open and every caller is an operator (keep it on loopback).
//! A request's token is compared with every configured token in constant time
//! ([`subtle`]), without stopping at the first match, so timing tells nothing about which
//! token, or how much of one, was right. The token's name is what audit records call "who".
//!
//! Not here: which endpoints need which role (the routers in [`crate::admin`]).

use crate::config::SecretRef;
use serde::{Deserialize, Serialize};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read endpoints only: messages, dead letters, channels, statistics, events, audit.
    ReadOnly,
    /// Everything, including reprocess, dead-letter retry and discard, and reload.
    Operator,
}

impl Role {
    /// The role as written in config and API answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read_only",
            Role::Operator => "operator",
        }
    }
}

/// One `[[admin.tokens]]` table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds the token; audit records name it. `[A-Za-z0-9_.-]`, at most 64.
    pub name: String,
    /// `read_only` or `operator`.
    pub role: Role,
    /// The secret, by reference: `{ env = "NAME" }` or `{ file = "path" }`.
    pub token: SecretRef,
}

/// A resolved token.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The secret.
    pub secret: String,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The caller of one request, as the handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (`api` when the API is open).
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens(pub Vec<ApiToken>);

impl Tokens {
    /// True when no token is configured: the API is open.
    pub fn is_open(&self) -> bool {
        self.0.is_empty()
    }

    /// The caller presenting `given`, if any token matches. Every token is compared, in
    /// constant time for equal lengths; an open API makes everyone an operator.
    pub fn identify(&self, given: Option<&str>) -> Option<Caller> {
        if self.is_open() {
            return Some(Caller {
                name: "api".into(),
                role: Role::Operator,
            });
        }
        let given = given?.as_bytes();
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, t) in self.0.iter().enumerate() {
            let hit = given.ct_eq(t.secret.as_bytes());
            index.conditional_assign(&(i as u32), hit);
            found |= hit;
        }
        if bool::from(found) {
            self.0.get(index as usize).map(|t| Caller {
                name: t.name.clone(),
                role: t.role,
            })
        } else {
            None
        }
    }
}

/// Checks the names of `[[admin.tokens]]`: (key, message) per problem.
pub fn name_problems(tokens: &[TokenConfig]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, t) in tokens.iter().enumerate() {
        let ok = !t.name.is_empty()
            && t.name.len() <= 64
            && t.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            out.push((
                format!("admin.tokens[{i}].name"),
                format!("'{}' is not a valid token name", t.name),
            ));
        }
        if !seen.insert(t.name.as_str()) || t.name == "admin" {
            out.push((
                format!("admin.tokens[{i}].name"),
                format!(
                    "token name '{}' is already used (`admin` is the name of admin.token)",
                    t.name
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens(vec![
            ApiToken {
                name: "viewer".into(),
                role: Role::ReadOnly,
                secret: "read-s3cret".into(),
            },
            ApiToken {
                name: "ops".into(),
                role: Role::Operator,
                secret: "ops-s3cret".into(),
            },
        ])
    }

    #[test]
    fn identifies_each_token_and_refuses_others() {
        let t = tokens();
        assert_eq!(
            t.identify(Some("read-s3cret")),
            Some(Caller {
                name: "viewer".into(),
                role: Role::ReadOnly
            })
        );
        assert_eq!(
            t.identify(Some("ops-s3cret")).map(|c| c.role),
            Some(Role::Operator)
        );
        for wrong in [Some("ops-s3cre"), Some(""), Some("ops-s3cretX"), None] {
            assert_eq!(t.identify(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn an_open_api_makes_everyone_an_operator() {
        let c = Tokens::default().identify(None).expect("open");
        assert_eq!(c.role, Role::Operator);
    }

    #[test]
    fn token_names_must_be_unique_and_plain() {
        let t = |name: &str| TokenConfig {
            name: name.into(),
            role: Role::ReadOnly,
            token: SecretRef {
                env: Some("X".into()),
                file: None,
            },
        };
        let p = name_problems(&[t("a"), t("a"), t("b c"), t("admin")]);
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "admin.tokens[1].name",
                "admin.tokens[2].name",
                "admin.tokens[3].name"
            ]
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        assert!(!format!("{:?}", tokens()).contains("s3cret"));
    }
}
