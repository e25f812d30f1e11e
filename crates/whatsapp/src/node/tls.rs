//! TLS for the chat node: the rustls server configuration (ring provider, never the
//! process default) used by STARTTLS on the client port and by the direct-TLS port
//! (XEP-0368).
//!
//! The certificate comes from `tls_cert`/`tls_key` (PEM) when configured. Without
//! them a self-signed certificate for the domain and `localhost` is generated with
//! rcgen on first start and stored under the domain dir (`tls/cert.pem`,
//! `tls/key.pem`, the key with mode 0600), then reused by later starts so clients
//! that pinned it keep working. Loaded once per process (kept in the `Domain`).
//!
//! Deliberately absent: certificate reloading without a restart, client
//! certificates (SASL EXTERNAL), SCRAM-*-PLUS channel binding, OCSP stapling.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::WhatsappConfig;

/// Where the generated certificate of `domain_dir` lives.
pub fn generated_paths(domain_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = domain_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// The server configuration for `config`: the configured certificate, else the
/// generated one under `domain_dir` (created if missing).
pub(crate) fn server_config(
    config: &WhatsappConfig,
    domain_dir: &Path,
) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let (cert, key) = generated_paths(domain_dir);
            if !(cert.exists() && key.exists()) {
                generate(&config.domain, &cert, &key)?;
            }
            (cert, key)
        }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("reading TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing TLS certificate {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "TLS certificate {} holds no certificate",
        cert.display()
    );
    let key_der = PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("reading TLS key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .context("TLS certificate and key do not match")?;
    Ok(Arc::new(server))
}

/// Writes a fresh self-signed certificate for `domain` and `localhost`. The key is
/// written to a temporary file with mode 0600 and renamed into place last, so a
/// crash never leaves a certificate without its key.
fn generate(domain: &str, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let mut names = vec![domain.to_owned()];
    if domain != "localhost" {
        names.push("localhost".to_owned());
    }
    let certified =
        rcgen::generate_simple_self_signed(names).context("generating a certificate")?;
    let dir = cert.parent().expect("the tls dir");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_private(
        &cert.with_extension("pem.tmp"),
        certified.cert.pem().as_bytes(),
        false,
    )?;
    write_private(
        &key.with_extension("pem.tmp"),
        certified.signing_key.serialize_pem().as_bytes(),
        true,
    )?;
    std::fs::rename(cert.with_extension("pem.tmp"), cert)?;
    std::fs::rename(key.with_extension("pem.tmp"), key)?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate");
    Ok(())
}

fn write_private(path: &Path, data: &[u8], secret: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(data)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused_and_configured_pair_wins() {
        let dir = tempfile::tempdir().unwrap();
        let config = WhatsappConfig::default();
        server_config(&config, dir.path()).unwrap();
        let (cert, key) = generated_paths(dir.path());
        let first = std::fs::read(&cert).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        server_config(&config, dir.path()).unwrap();
        assert_eq!(
            std::fs::read(&cert).unwrap(),
            first,
            "reused, not regenerated"
        );

        let missing = WhatsappConfig {
            tls_cert: Some(dir.path().join("nope.pem")),
            tls_key: Some(key.clone()),
            ..WhatsappConfig::default()
        };
        let error = server_config(&missing, dir.path()).unwrap_err();
        assert!(format!("{error:#}").contains("nope.pem"), "{error:#}");

        let swapped = WhatsappConfig {
            tls_cert: Some(key.clone()),
            tls_key: Some(cert.clone()),
            ..WhatsappConfig::default()
        };
        assert!(server_config(&swapped, dir.path()).is_err());
    }
}
