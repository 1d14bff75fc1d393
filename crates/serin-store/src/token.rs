//! API token minting and parsing. Format: `serin_<id>_<secret>`, id = 12 lowercase hex chars,
//! secret = 64 lowercase hex chars (32 random bytes). Only `hex(sha256(secret))` is stored.

use rand::RngCore;
use sha2::{Digest, Sha256};

pub(crate) const PREFIX: &str = "serin_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 64;

/// A freshly minted token: `(id, secret)`.
pub(crate) fn mint() -> (String, String) {
    let mut rng = rand::rng();
    let mut id = [0u8; ID_LEN / 2];
    let mut secret = [0u8; SECRET_LEN / 2];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    (hex::encode(id), hex::encode(secret))
}

pub(crate) fn format(id: &str, secret: &str) -> String {
    format!("{PREFIX}{id}_{secret}")
}

pub(crate) fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Splits a presented token into `(id, secret)`, or None when it is not well-formed.
pub(crate) fn parse(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (is_lower_hex(id, ID_LEN) && is_lower_hex(secret, SECRET_LEN)).then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_parse_back() {
        let (id, secret) = mint();
        let t = format(&id, &secret);
        assert_eq!(parse(&t), Some((id.as_str(), secret.as_str())));
        assert_eq!(t.len(), PREFIX.len() + ID_LEN + 1 + SECRET_LEN);
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        let (id, secret) = mint();
        for bad in [
            String::new(),
            "serin_".into(),
            format!("serin_{id}"),
            format!("serin_{id}_"),
            format!("Serin_{id}_{secret}"),
            format!("serin_{}_{secret}", id.to_uppercase()),
            format!("serin_{id}_{secret}0"),
            format!("serin_{id}x_{secret}"),
            format!("serin_{id}_{secret}_"),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }
}
