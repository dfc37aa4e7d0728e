//! `rulebox bundle`: keys, packing, signing, verifying and inspecting bundles.

use super::{Global, print_json, trusted_keys};
use anyhow::{Context, Result};
use rulebox::bundle::{self, BundleSource, SecretKey, SourceLimits};
use rulebox::{Bundle, LoadOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Creates an ed25519 key pair: NAME.key (secret) and NAME.pub.
    Keygen {
        /// Path prefix of the two files.
        name: PathBuf,
    },
    /// Packs a bundle directory into a .tar.gz, filling in component digests.
    Pack {
        /// The bundle directory.
        dir: PathBuf,
        /// The archive to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Sign the archive with this secret key.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Signs a bundle (directory: writes bundle.sig; archive: rewrites it with the signature).
    Sign {
        /// The bundle directory or archive.
        bundle: PathBuf,
        /// The secret key.
        #[arg(long)]
        key: PathBuf,
    },
    /// Checks a bundle's signature against trusted keys; exits 1 if it is not valid.
    Verify {
        /// The bundle directory or archive.
        bundle: PathBuf,
        /// A trusted public key file (repeatable).
        #[arg(long, required = true)]
        trusted: Vec<PathBuf>,
    },
    /// Prints what a bundle holds and whether it is valid, as JSON.
    Inspect {
        /// The bundle directory or archive.
        bundle: PathBuf,
        /// A trusted public key file (repeatable): the signature is then checked and
        /// `signed` says whether it is valid.
        #[arg(long)]
        trusted: Vec<PathBuf>,
    },
}

pub fn run(global: &Global, command: Command) -> Result<ExitCode> {
    let limits = SourceLimits::default();
    match command {
        Command::Keygen { name } => {
            let key = SecretKey::generate()?;
            let secret = name.with_extension("key");
            let public = name.with_extension("pub");
            write_private(&secret, &key.to_hex())?;
            std::fs::write(&public, key.public().to_hex() + "\n")
                .with_context(|| format!("writing {}", public.display()))?;
            print_json(
                &serde_json::json!({"secret": secret, "public": public, "key": key.public().to_hex()}),
            )?;
        }
        Command::Pack { dir, output, key } => {
            let key = key.map(|k| SecretKey::from_file(&k)).transpose()?;
            bundle::pack(&dir, &output, key.as_ref(), &limits)?;
            let packed = BundleSource::open(&output, &limits)?;
            print_json(&serde_json::json!({
                "archive": output,
                "digest": packed.digest_hex(),
                "files": packed.files().len(),
                "signed": key.is_some(),
            }))?;
        }
        Command::Sign { bundle: path, key } => {
            let key = SecretKey::from_file(&key)?;
            let digest = bundle::sign(&path, &key, &limits)?;
            print_json(&serde_json::json!({
                "signed": path,
                "key": key.public().to_hex(),
                "digest": digest,
            }))?;
        }
        Command::Verify {
            bundle: path,
            trusted,
        } => {
            let keys = trusted_keys(&trusted)?;
            let source = BundleSource::open(&path, &limits)?;
            return Ok(match bundle::verify(&source, &keys) {
                Ok(key) => {
                    print_json(&serde_json::json!({
                        "bundle": path,
                        "valid": true,
                        "key": key.to_hex(),
                        "digest": source.digest_hex(),
                    }))?;
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    print_json(
                        &serde_json::json!({"bundle": path, "valid": false, "error": e.to_string()}),
                    )?;
                    ExitCode::from(1)
                }
            });
        }
        Command::Inspect {
            bundle: path,
            trusted,
        } => {
            let options = LoadOptions {
                trusted_keys: trusted_keys(&trusted)?,
                ..LoadOptions::default()
            };
            return Ok(match Bundle::load(&global.engine()?, &path, &options) {
                Ok(b) => {
                    let mut out = serde_json::to_value(b.describe())?;
                    out["valid"] = true.into();
                    print_json(&out)?;
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    print_json(&serde_json::json!({
                        "bundle": path.display().to_string(),
                        "ok": false,
                        "valid": false,
                        "error": e,
                    }))?;
                    ExitCode::from(1)
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).with_context(|| {
        format!(
            "creating {} (an existing key is never overwritten)",
            path.display()
        )
    })?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}
