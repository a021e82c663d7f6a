//! Per-rebuild secrets and the secret files the daemon reads: rebuild tokens
//! (random, stored only as a SHA-256 hash, compared in constant time), the
//! ephemeral ed25519 key pair that the installer puts into root's
//! `authorized_keys`, password/token files, and the shape check for the
//! root password crypt hash.
//!
//! This module owns the types that keep secrets out of sight: [`Token`],
//! [`SecretString`] and [`EphemeralKey`] print `<redacted>` under `Debug`,
//! implement no `Display`, and are wiped (best effort) when dropped. It must
//! never log, print or put a secret value into an error message; errors name
//! the file or the kind of problem, never the content. It never touches the
//! store: callers persist what they get from here.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRng as _;
use rand::rngs::SysRng;
use russh::keys::ssh_key::private::{Ed25519Keypair, PrivateKey};
use russh::keys::ssh_key::{HashAlg, LineEnding, PublicKey};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Number of random bytes in a rebuild token (256 bits, well above the
/// 128-bit floor the design asks for).
pub const TOKEN_BYTES: usize = 32;

/// Errors from generating or reading secrets. Messages never contain secret
/// material.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("operating system random number generator failed: {0}")]
    Rng(String),
    #[error("ssh key encoding failed: {0}")]
    KeyEncoding(String),
    #[error("invalid ssh private key (openssh pem expected)")]
    InvalidPrivateKey,
    #[error("invalid ssh public key line")]
    InvalidPublicKey,
    #[error("unsupported ssh key algorithm {0} (ed25519 expected)")]
    UnsupportedAlgorithm(String),
    #[error("invalid key comment: {0}")]
    InvalidComment(&'static str),
    #[error("cannot read secret file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {path} is not valid utf-8")]
    NotUtf8 { path: PathBuf },
    #[error("secret file {path} is empty")]
    EmptyFile { path: PathBuf },
    #[error("not a supported crypt hash: {0}")]
    InvalidCryptHash(&'static str),
}

/// A string that must never be shown: passwords, bearer tokens, PEM private
/// keys. `Debug` prints `SecretString(<redacted>)`, there is no `Display`,
/// and the bytes are overwritten when the value is dropped. There is
/// deliberately no `PartialEq`: compare tokens with [`verify_token`].
#[derive(Clone, Default)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Callers must not log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        wipe(std::mem::take(&mut self.0).into_bytes());
    }
}

/// Overwrites a buffer before it is freed. `black_box` keeps the compiler
/// from eliding the writes as dead stores; this is best effort (copies made
/// by earlier reallocations are out of reach), without `unsafe` or an extra
/// dependency.
fn wipe(mut bytes: Vec<u8>) {
    bytes.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(&bytes);
}

fn os_random<const N: usize>() -> Result<[u8; N], SecretsError> {
    let mut buf = [0u8; N];
    SysRng
        .try_fill_bytes(&mut buf)
        .map_err(|e| SecretsError::Rng(e.to_string()))?;
    Ok(buf)
}

/// A per-rebuild bearer token: 32 bytes from the OS RNG, URL-safe base64
/// without padding (43 characters, safe in URLs and shell scripts).
#[derive(Clone)]
pub struct Token(SecretString);

impl Token {
    /// A fresh token from the operating system's RNG.
    pub fn generate() -> Result<Self, SecretsError> {
        let mut bytes = os_random::<TOKEN_BYTES>()?;
        let token = Token(SecretString::new(URL_SAFE_NO_PAD.encode(bytes)));
        bytes.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&bytes);
        Ok(token)
    }

    /// The token text, to put into a URL handed to the machine. Never log it.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// SHA-256 of the token text: what the store keeps.
    pub fn hash(&self) -> [u8; 32] {
        hash_token(self.expose())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// SHA-256 of a token's text.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `presented` is the token whose hash is `stored_hash`. The hash
/// comparison runs in constant time; hashing first also makes the time
/// independent of where a wrong token differs.
pub fn verify_token(presented: &str, stored_hash: &[u8; 32]) -> bool {
    let presented_hash = hash_token(presented);
    bool::from(presented_hash.ct_eq(stored_hash))
}

/// The comment every ephemeral key carries, so an operator who finds a
/// leftover key on a machine knows where it came from.
pub fn ephemeral_key_comment(host: &str, rebuild: u64) -> String {
    format!("provisioning:{host}:rebuild-{rebuild}")
}

/// One rebuild's ed25519 key pair. The public half goes into the answer file
/// (`root-ssh-keys`); the private half lives only in the store until the
/// join ends.
#[derive(Clone)]
pub struct EphemeralKey {
    key: PrivateKey,
    public_line: String,
    private_pem: SecretString,
}

impl EphemeralKey {
    /// A fresh ed25519 key pair with `comment` (see
    /// [`ephemeral_key_comment`]). The comment must be one printable line
    /// without whitespace, since it ends up in `authorized_keys` and is
    /// matched literally when the key is removed again.
    pub fn generate(comment: &str) -> Result<Self, SecretsError> {
        validate_comment(comment)?;
        let mut seed = os_random::<32>()?;
        let keypair = Ed25519Keypair::from_seed(&seed);
        seed.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&seed);
        let mut key = PrivateKey::from(keypair);
        key.set_comment(comment);
        Self::from_key(key)
    }

    /// Parses the PEM from [`EphemeralKey::private_openssh`] back (as stored).
    pub fn from_private_openssh(pem: &str) -> Result<Self, SecretsError> {
        let key = PrivateKey::from_openssh(pem).map_err(|_| SecretsError::InvalidPrivateKey)?;
        if key.is_encrypted() {
            return Err(SecretsError::InvalidPrivateKey);
        }
        if key.algorithm() != russh::keys::Algorithm::Ed25519 {
            return Err(SecretsError::UnsupportedAlgorithm(
                key.algorithm().to_string(),
            ));
        }
        Self::from_key(key)
    }

    fn from_key(key: PrivateKey) -> Result<Self, SecretsError> {
        let public_line = key
            .public_key()
            .to_openssh()
            .map_err(|e| SecretsError::KeyEncoding(e.to_string()))?;
        let pem = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| SecretsError::KeyEncoding(e.to_string()))?;
        let private_pem = SecretString::new(pem.as_str());
        Ok(Self {
            key,
            public_line,
            private_pem,
        })
    }

    /// The `authorized_keys` line: `ssh-ed25519 AAAA… <comment>`.
    pub fn public_openssh(&self) -> &str {
        &self.public_line
    }

    /// The private key as an OpenSSH PEM (unencrypted), for the store only.
    pub fn private_openssh(&self) -> &SecretString {
        &self.private_pem
    }

    /// `SHA256:…` fingerprint of the public key, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The parsed key, for authenticating with russh.
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }
}

impl fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EphemeralKey")
            .field("public", &self.public_line)
            .field("private", &"<redacted>")
            .finish()
    }
}

fn validate_comment(comment: &str) -> Result<(), SecretsError> {
    if comment.is_empty() {
        return Err(SecretsError::InvalidComment("empty"));
    }
    if comment.len() > 200 {
        return Err(SecretsError::InvalidComment("longer than 200 bytes"));
    }
    if !comment.chars().all(|c| c.is_ascii_graphic()) {
        return Err(SecretsError::InvalidComment(
            "only printable ascii without spaces is allowed",
        ));
    }
    Ok(())
}

/// `SHA256:…` fingerprint of an OpenSSH public key line (`type base64
/// [comment]`), as `ssh-keygen -l` prints it; for the dashboard.
pub fn fingerprint_sha256(public_key_line: &str) -> Result<String, SecretsError> {
    let key = PublicKey::from_openssh(public_key_line.trim())
        .map_err(|_| SecretsError::InvalidPublicKey)?;
    Ok(key.fingerprint(HashAlg::Sha256).to_string())
}

/// Reads a secret (password, bearer token) from a file, as systemd's
/// `LoadCredential=` supplies them. Trailing line breaks are removed; an
/// empty secret is an error. Errors name the path, never the content.
pub fn read_secret_file(path: &Path) -> Result<SecretString, SecretsError> {
    let bytes = std::fs::read(path).map_err(|source| SecretsError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    let mut text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            wipe(e.into_bytes());
            return Err(SecretsError::NotUtf8 {
                path: path.to_path_buf(),
            });
        }
    };
    while text.ends_with('\n') || text.ends_with('\r') {
        text.pop();
    }
    let secret = SecretString::from(text);
    if secret.is_empty() {
        return Err(SecretsError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(secret)
}

/// Checks that `s` looks like a crypt(3) hash the Proxmox installer accepts
/// for `root-password-hashed`: sha512crypt (`$6$`), sha256crypt (`$5$`) or
/// yescrypt (`$y$`). This checks the shape, not the password. The error
/// never quotes the input (it may be a plain password pasted by mistake).
pub fn validate_crypt_hash(s: &str) -> Result<(), SecretsError> {
    let s = s.trim_end_matches(['\n', '\r']);
    let fields: Vec<&str> = s.split('$').collect();
    if fields.first() != Some(&"") || fields.len() < 4 {
        return Err(SecretsError::InvalidCryptHash(
            "expected $6$, $5$ or $y$ crypt format",
        ));
    }
    match fields[1] {
        "6" => check_sha_crypt(&fields[2..], 86),
        "5" => check_sha_crypt(&fields[2..], 43),
        "y" => check_yescrypt(&fields[2..]),
        _ => Err(SecretsError::InvalidCryptHash(
            "only $6$ (sha512), $5$ (sha256) and $y$ (yescrypt) are supported",
        )),
    }
}

fn is_crypt_b64(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
}

/// `[rounds=N$]salt$hash` with a salt of at most 16 characters.
fn check_sha_crypt(rest: &[&str], hash_len: usize) -> Result<(), SecretsError> {
    let rest = match rest.first() {
        Some(first) if first.starts_with("rounds=") => {
            let n = &first["rounds=".len()..];
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SecretsError::InvalidCryptHash("bad rounds= field"));
            }
            &rest[1..]
        }
        _ => rest,
    };
    let [salt, hash] = rest else {
        return Err(SecretsError::InvalidCryptHash("wrong number of $ fields"));
    };
    // Salt characters are not restricted by the algorithm except for `$`
    // and `:`/newline, which would break shadow files.
    if salt.len() > 16 || salt.contains([':', '\n']) {
        return Err(SecretsError::InvalidCryptHash("bad salt"));
    }
    if hash.len() != hash_len || !is_crypt_b64(hash) {
        return Err(SecretsError::InvalidCryptHash(
            "bad hash length or alphabet",
        ));
    }
    Ok(())
}

/// `params$salt$hash`, all in crypt's base64 alphabet, hash 43 characters.
fn check_yescrypt(rest: &[&str]) -> Result<(), SecretsError> {
    let [params, salt, hash] = rest else {
        return Err(SecretsError::InvalidCryptHash("wrong number of $ fields"));
    };
    if params.is_empty() || !is_crypt_b64(params) {
        return Err(SecretsError::InvalidCryptHash("bad yescrypt parameters"));
    }
    if salt.is_empty() || !is_crypt_b64(salt) {
        return Err(SecretsError::InvalidCryptHash("bad salt"));
    }
    if hash.len() != 43 || !is_crypt_b64(hash) {
        return Err(SecretsError::InvalidCryptHash(
            "bad hash length or alphabet",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_32_random_bytes_url_safe() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 43);
        let raw = URL_SAFE_NO_PAD.decode(a.expose()).unwrap();
        assert_eq!(raw.len(), TOKEN_BYTES);
        assert!(
            a.expose()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = Token::generate().unwrap();
        let shown = format!("{t:?}");
        assert_eq!(shown, "Token(<redacted>)");
        assert!(!shown.contains(t.expose()));
    }

    #[test]
    fn verify_token_accepts_only_the_right_token() {
        let t = Token::generate().unwrap();
        let h = t.hash();
        assert!(verify_token(t.expose(), &h));
        assert!(!verify_token("", &h));
        assert!(!verify_token(&t.expose()[1..], &h));
        let other = Token::generate().unwrap();
        assert!(!verify_token(other.expose(), &h));
        assert_eq!(h, hash_token(t.expose()));
    }

    #[test]
    fn ephemeral_key_round_trips_through_pem() {
        let comment = ephemeral_key_comment("pve-01", 3);
        let k = EphemeralKey::generate(&comment).unwrap();
        let line = k.public_openssh();
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        assert!(line.ends_with(" provisioning:pve-01:rebuild-3"), "{line}");
        let pem = k.private_openssh().expose();
        assert!(pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let back = EphemeralKey::from_private_openssh(pem).unwrap();
        assert_eq!(back.public_openssh(), line);
        assert_eq!(back.fingerprint(), k.fingerprint());
        assert_eq!(fingerprint_sha256(line).unwrap(), k.fingerprint());
        assert!(k.fingerprint().starts_with("SHA256:"));
        let other = EphemeralKey::generate(&comment).unwrap();
        assert_ne!(other.public_openssh(), line);
    }

    #[test]
    fn ephemeral_key_debug_hides_the_private_key() {
        let k = EphemeralKey::generate("c").unwrap();
        let shown = format!("{k:?} {:?}", k.private_openssh());
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn ephemeral_key_rejects_bad_comments_and_pem() {
        assert!(EphemeralKey::generate("").is_err());
        assert!(EphemeralKey::generate("a b").is_err());
        assert!(EphemeralKey::generate("a\nssh-ed25519 AAAA").is_err());
        assert!(EphemeralKey::from_private_openssh("nope").is_err());
        assert!(fingerprint_sha256("ssh-ed25519 nope").is_err());
    }

    #[test]
    fn fingerprint_matches_ssh_keygen_format() {
        // Known vector: a key made with `ssh-keygen -t ed25519` and the
        // fingerprint `ssh-keygen -lf` printed for it.
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFhXtEPYELtwcPCpCnSUEV6IDekxsPd5rx/Upk4moZGm user@example.com";
        assert_eq!(
            fingerprint_sha256(line).unwrap(),
            "SHA256:yIZSGvRfOPVGCwf1M61RkzOSsQTnaXdPpfAqlGQTMTE"
        );
    }

    #[test]
    fn secret_file_is_trimmed_and_errors_name_only_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret value\n").unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), "s3cret value");
        std::fs::write(&p, "x\r\n\n").unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), "x");
        std::fs::write(&p, "\n").unwrap();
        let e = read_secret_file(&p).unwrap_err().to_string();
        assert!(e.contains("pw") && e.contains("empty"), "{e}");
        std::fs::write(&p, b"\xffhidden\n").unwrap();
        let e = read_secret_file(&p).unwrap_err().to_string();
        assert!(!e.contains("hidden"), "{e}");
        let missing = dir.path().join("missing");
        let e = read_secret_file(&missing).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        let s = SecretString::new("abc");
        assert_eq!(format!("{s:?}"), "SecretString(<redacted>)");
    }

    #[test]
    fn crypt_hash_shapes() {
        let sha512 = "$6$rounds=5000$saltsalt$".to_string() + &"a".repeat(86);
        let sha512_plain = "$6$abcdefgh$".to_string() + &"./".repeat(43);
        let sha256 = "$5$salt$".to_string() + &"B".repeat(43);
        let yes = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$".to_string() + &"X".repeat(43);
        for ok in [&sha512, &sha512_plain, &sha256, &yes] {
            validate_crypt_hash(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let bad = [
            "",
            "hunter2",
            "$1$salt$abcdefghijklmnopqrstuv",
            "$2b$10$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz0123",
            "$6$salt$short",
            "$6$rounds=x$salt$",
            "$5$salt$",
            "$y$j9T$salt$short",
            "$y$$salt$",
        ];
        for b in bad {
            let e = validate_crypt_hash(b);
            assert!(e.is_err(), "{b} accepted");
            if !b.is_empty() {
                assert!(!e.unwrap_err().to_string().contains(b));
            }
        }
        let too_long_salt = "$6$".to_string() + &"s".repeat(17) + "$" + &"a".repeat(86);
        assert!(validate_crypt_hash(&too_long_salt).is_err());
    }
}
