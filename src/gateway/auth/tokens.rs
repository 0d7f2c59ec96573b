//! The gateway's tokens: each has a name and a scope, and is known only by
//! the SHA-256 of its text, so the tokens file holds no secret:
//!
//! ```toml
//! [[token]]
//! name = "wall-screen"
//! scope = "read"
//! sha256 = "<hex digest of the token>"
//! ```
//!
//! `--api-token` (or `--api-token-file`) adds one `admin` token named
//! `api-token`. The table is read again on SIGHUP, so a token can be
//! rotated: add the new one, reload, move the clients, remove the old one,
//! reload. A file that fails to read keeps the table in force.

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What a token may do; each scope includes those below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every GET under /api/, /metrics and the dashboard's WebSocket.
    Read,
    /// Also the commands (POST): products, stock, orders, deliveries.
    Write,
    /// Also the operator's actions: dead letters, the simulator's control.
    Admin,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// The name `--api-token` goes by, as an actor and in logs.
pub const API_TOKEN_NAME: &str = "api-token";

/// A token the gateway recognises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub name: Arc<str>,
    pub scope: Scope,
    digest: [u8; 32],
}

/// The tokens in force at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenTable {
    tokens: Vec<Token>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    #[error("cannot read --tokens-file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--tokens-file {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    scope: Scope,
    sha256: String,
}

/// The SHA-256 of a token's text, as the tokens file gives it.
pub fn digest_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenTable {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The table `text` (a tokens file's content) describes.
    pub fn parse(text: &str) -> Result<TokenTable, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let mut tokens: Vec<Token> = Vec::with_capacity(file.token.len());
        for (n, entry) in file.token.into_iter().enumerate() {
            let which = format!("token {} ({:?})", n + 1, entry.name);
            let name = entry.name.trim();
            if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
                return Err(format!("{which}: a name is 1 to 64 printable characters"));
            }
            if tokens.iter().any(|t| &*t.name == name) {
                return Err(format!("{which}: the name is used twice"));
            }
            let digest = hex::decode(entry.sha256.trim())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| {
                    format!("{which}: sha256 must be 64 hex digits (`printf %s TOKEN | sha256sum`)")
                })?;
            tokens.push(Token {
                name: name.into(),
                scope: entry.scope,
                digest,
            });
        }
        Ok(TokenTable { tokens })
    }

    /// Adds `--api-token` as the `admin` token `api-token`.
    pub fn with_api_token(mut self, token: &SecretString) -> TokenTable {
        self.tokens.retain(|t| &*t.name != API_TOKEN_NAME);
        self.tokens.push(Token {
            name: API_TOKEN_NAME.into(),
            scope: Scope::Admin,
            digest: digest_of(token.expose_secret()),
        });
        self
    }

    /// The token `presented` is, if any. Every entry is compared, in
    /// constant time, so the answer's timing says nothing about which
    /// entry (or how much of a digest) matched.
    pub fn identify(&self, presented: &str) -> Option<&Token> {
        let digest = digest_of(presented);
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&digest)) {
                found = Some(token);
            }
        }
        found
    }
}

/// Where the tokens come from, and the table now in force.
#[derive(Debug)]
pub struct Tokens {
    file: Option<PathBuf>,
    api_token_file: Option<PathBuf>,
    api_token: Option<SecretString>,
    table: ArcSwap<TokenTable>,
}

impl Default for Tokens {
    fn default() -> Tokens {
        Tokens::fixed(TokenTable::default())
    }
}

impl Tokens {
    /// Tokens from `--tokens-file` and `--api-token` / `--api-token-file`,
    /// read now; `reload` reads the files again.
    pub fn load(
        file: Option<&Path>,
        api_token: Option<SecretString>,
        api_token_file: Option<&Path>,
    ) -> Result<Tokens, TokensFileError> {
        let tokens = Tokens {
            file: file.map(Path::to_path_buf),
            api_token_file: api_token_file.map(Path::to_path_buf),
            api_token,
            table: ArcSwap::from_pointee(TokenTable::default()),
        };
        tokens.table.store(Arc::new(tokens.read()?));
        Ok(tokens)
    }

    /// A table that never changes (tests, and the worker's single token).
    pub fn fixed(table: TokenTable) -> Tokens {
        Tokens {
            file: None,
            api_token_file: None,
            api_token: None,
            table: ArcSwap::from_pointee(table),
        }
    }

    pub fn current(&self) -> Arc<TokenTable> {
        self.table.load_full()
    }

    /// True when any token is configured: then every API route needs one.
    pub fn required(&self) -> bool {
        !self.table.load().is_empty()
    }

    /// Reads the files again and puts the new table in force; on an error
    /// the old one stays. Gives the number of tokens now in force.
    pub fn reload(&self) -> Result<usize, TokensFileError> {
        let table = self.read()?;
        let count = table.len();
        self.table.store(Arc::new(table));
        Ok(count)
    }

    fn read(&self) -> Result<TokenTable, TokensFileError> {
        let mut table = match &self.file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| TokensFileError::Read {
                        path: path.clone(),
                        source,
                    })?;
                TokenTable::parse(&text).map_err(|message| TokensFileError::Invalid {
                    path: path.clone(),
                    message,
                })?
            }
            None => TokenTable::default(),
        };
        if let Some(path) = &self.api_token_file {
            let text = std::fs::read_to_string(path).map_err(|source| TokensFileError::Read {
                path: path.clone(),
                source,
            })?;
            let token = text.lines().next().unwrap_or("").trim();
            if token.is_empty() {
                return Err(TokensFileError::Invalid {
                    path: path.clone(),
                    message: "the --api-token-file is empty".into(),
                });
            }
            table = table.with_api_token(&SecretString::from(token.to_string()));
        } else if let Some(token) = &self.api_token {
            table = table.with_api_token(token);
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, scope: &str, token: &str) -> String {
        format!(
            "[[token]]\nname = \"{name}\"\nscope = \"{scope}\"\nsha256 = \"{}\"\n",
            hex::encode(digest_of(token))
        )
    }

    #[test]
    fn tokens_are_known_by_their_digest_and_scopes_are_ordered() {
        let text = entry("wall", "read", "r-token") + &entry("shop", "write", "w-token");
        let table = TokenTable::parse(&text).unwrap();
        let wall = table.identify("r-token").unwrap();
        assert_eq!((&*wall.name, wall.scope), ("wall", Scope::Read));
        assert_eq!(table.identify("w-token").unwrap().scope, Scope::Write);
        assert!(table.identify("r-token ").is_none());
        assert!(table.identify("").is_none());
        assert!(Scope::Read < Scope::Write && Scope::Write < Scope::Admin);
        let with_admin = table.with_api_token(&SecretString::from("a-token"));
        assert_eq!(with_admin.identify("a-token").unwrap().scope, Scope::Admin);
        assert_eq!(
            &*with_admin.identify("a-token").unwrap().name,
            API_TOKEN_NAME
        );
    }

    #[test]
    fn a_bad_file_says_which_entry_and_why() {
        let bad_digest = "[[token]]\nname = \"x\"\nscope = \"read\"\nsha256 = \"abc\"\n";
        assert!(TokenTable::parse(bad_digest)
            .unwrap_err()
            .contains("64 hex digits"));
        let bad_scope = entry("x", "root", "t");
        assert!(TokenTable::parse(&bad_scope).unwrap_err().contains("root"));
        let twice = entry("x", "read", "a") + &entry("x", "write", "b");
        assert!(TokenTable::parse(&twice)
            .unwrap_err()
            .contains("used twice"));
        let unknown = entry("x", "read", "a").replace("scope", "role");
        assert!(TokenTable::parse(&unknown).is_err());
        assert!(TokenTable::parse("").unwrap().is_empty());
    }

    #[test]
    fn reload_keeps_the_old_table_when_the_file_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, entry("old", "read", "old-token")).unwrap();
        let tokens = Tokens::load(Some(&path), None, None).unwrap();
        assert!(tokens.current().identify("old-token").is_some());
        std::fs::write(&path, entry("new", "read", "new-token")).unwrap();
        assert_eq!(tokens.reload().unwrap(), 1);
        assert!(tokens.current().identify("old-token").is_none());
        assert!(tokens.current().identify("new-token").is_some());
        std::fs::write(&path, "[[token]]\nname = 1\n").unwrap();
        assert!(tokens.reload().is_err());
        assert!(tokens.current().identify("new-token").is_some());
    }
}
