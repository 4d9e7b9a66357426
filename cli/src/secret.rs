//! The embedded deployment's token secret, kept in the data directory so that
//! `tidemark dev` and `tidemark token` agree without any configuration.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use rand::RngCore;
use secrecy::SecretString;

const FILE: &str = "jwt-secret";

/// Reads the secret from `data_dir/jwt-secret`, creating it (mode 0600) if missing.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<SecretString> {
    let path = data_dir.join(FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(SecretString::from(existing.trim().to_owned()));
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create {}", data_dir.display()))?;
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())
                .with_context(|| format!("failed to write {}", path.display()))?;
            Ok(SecretString::from(secret))
        }
        // Another process created it between our read and our create: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let existing = std::fs::read_to_string(&path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            Ok(SecretString::from(existing.trim().to_owned()))
        }
        Err(e) => Err(e).with_context(|| format!("failed to create {}", path.display())),
    }
}
