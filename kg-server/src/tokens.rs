//! The bearer tokens a node accepts. `--auth-tokens-file` names a file of `TOKEN ROLE` lines
//! (`read` or `write`, which implies read; `#` starts a comment). Tokens are kept only as
//! SHA-256 digests, compared in constant time, and never logged. Which request needs which
//! role is the HTTP layer's business (`http::auth`).

use std::fmt;
use std::path::Path;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
}

/// The tokens a node accepts, as digests.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<([u8; 32], Role)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} configured)", self.entries.len())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Reads and parses a tokens file; errors name the line, never the token.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the tokens file {}", path.display()))?;
        Self::parse(&text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries: Vec<([u8; 32], Role)> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(token), Some(role), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!(
                    "line {}: expected `TOKEN ROLE` (ROLE is read or write)",
                    number + 1
                ));
            };
            let role = match role {
                "read" => Role::Read,
                "write" => Role::Write,
                other => {
                    return Err(format!(
                        "line {}: role must be read or write, not {other:?}",
                        number + 1
                    ))
                }
            };
            // It must fit in an Authorization header: visible ASCII (whitespace split it
            // off already).
            if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
                return Err(format!(
                    "line {}: the token is not a valid header value",
                    number + 1
                ));
            }
            let digest = digest(token);
            if entries.iter().any(|(known, _)| *known == digest) {
                return Err(format!("line {}: this token appears twice", number + 1));
            }
            entries.push((digest, role));
        }
        if entries.is_empty() {
            return Err("no tokens: every request would be refused".to_owned());
        }
        Ok(Self { entries })
    }

    /// The role of `token`, if it is one of ours. Every configured digest is compared, in
    /// constant time, whatever matches: neither the time nor the order tells which one did.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let presented = digest(token);
        let mut found = None;
        for (known, role) in &self.entries {
            if bool::from(known.ct_eq(&presented)) {
                found = Some(*role);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_file_has_roles_comments_and_blank_lines() {
        let tokens =
            Tokens::parse("# ops team\nreader-1 read\n\n  writer-1   write  # the deploy bot\n")
                .unwrap();
        assert_eq!(tokens.role_of("reader-1"), Some(Role::Read));
        assert_eq!(tokens.role_of("writer-1"), Some(Role::Write));
        assert_eq!(tokens.role_of("writer-"), None);
        assert_eq!(tokens.role_of(""), None);
        assert_eq!(format!("{tokens:?}"), "Tokens(2 configured)");
    }

    #[test]
    fn bad_files_are_refused_by_line_without_echoing_the_token() {
        for (text, want) in [
            (
                "secret admin\n",
                "line 1: role must be read or write, not \"admin\"",
            ),
            ("a read\nsecret\n", "line 2: expected `TOKEN ROLE`"),
            ("a read\nb read extra\n", "line 2: expected `TOKEN ROLE`"),
            ("a read\na write\n", "line 2: this token appears twice"),
            ("# nothing\n", "no tokens"),
        ] {
            let err = Tokens::parse(text).unwrap_err();
            assert!(err.starts_with(want), "{text:?}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
