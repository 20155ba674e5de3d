//! TLS for the front doors: load a PEM certificate chain and key into rustls
//! `ServerConfig`s built on the ring provider (never a process-wide default). The
//! handshake itself happens on the doors' shared accept path (`door::listen`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate or key file that cannot be used, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate file {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("cannot read TLS key file {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("TLS certificate {cert} and key {key} do not make a usable pair: {message}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

fn describe(error: rustls_pki_types::pem::Error, what: &str) -> String {
    match error {
        rustls_pki_types::pem::Error::NoItemsFound => format!("no PEM {what} found in it"),
        rustls_pki_types::pem::Error::Io(error) => error.to_string(),
        other => format!("not valid PEM ({other})"),
    }
}

/// The loaded certificate and key, as server configs for the stream doors and for
/// the web door (which offers `http/1.1` by ALPN).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub streams: Arc<ServerConfig>,
    pub web: Arc<ServerConfig>,
    /// The chain's first certificate: whose names the web door trusts as its own.
    pub leaf: CertificateDer<'static>,
}

impl TlsSettings {
    /// Each file is read once, so every door and the Origin check see the same
    /// certificate even if the files are replaced meanwhile.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsSettings, TlsError> {
        let chain = read_chain(cert)?;
        let leaf = chain[0].clone();
        let streams = server_config(cert, key, chain)?;
        let mut web = streams.clone();
        web.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsSettings {
            cert: cert.into(),
            key: key.into(),
            streams: Arc::new(streams),
            web: Arc::new(web),
            leaf,
        })
    }
}

/// The PEM certificate chain in `cert`, leaf first; never empty.
fn read_chain(cert: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Cert {
            path: cert.into(),
            message: describe(e, "certificate"),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert.into(),
            message: describe(e, "certificate"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert.into(),
            message: "no PEM certificate found in it".into(),
        });
    }
    Ok(chain)
}

/// Whether the certificate `leaf` is valid for `host`, a name or address as a `Host`
/// header gives it (an IPv6 address in brackets, no port). Its names are the
/// operator's: a name pointed at this server by someone else is not among them.
pub fn certifies(leaf: &CertificateDer<'_>, host: &str) -> bool {
    let host = match host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
    {
        Some(inside) if inside.parse::<std::net::Ipv6Addr>().is_ok() => inside,
        Some(_) => return false,
        None => host,
    };
    let (Ok(leaf), Ok(name)) = (
        webpki::EndEntityCert::try_from(leaf),
        rustls_pki_types::ServerName::try_from(host),
    ) else {
        return false;
    };
    leaf.verify_is_valid_for_subject_name(&name).is_ok()
}

/// A server config (ring provider, no ALPN) for `chain`, read from `cert`, and the
/// key in `key` (PEM PKCS#8, PKCS#1 or SEC1).
fn server_config(
    cert: &Path,
    key: &Path,
    chain: Vec<CertificateDer<'static>>,
) -> Result<ServerConfig, TlsError> {
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.into(),
        message: describe(e, "private key"),
    })?;
    let pair_error = |message: String| TlsError::Pair {
        cert: cert.into(),
        key: key.into(),
        message,
    };
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| pair_error(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(|e| pair_error(e.to_string()))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let missing = TlsSettings::load(&cert, &key).unwrap_err();
        assert!(missing.to_string().contains("cert.pem"), "{missing}");
        std::fs::write(&cert, "not a certificate\n").unwrap();
        let garbage = TlsSettings::load(&cert, &key).unwrap_err();
        assert!(
            garbage.to_string().contains("cert.pem")
                && garbage.to_string().contains("no PEM certificate"),
            "{garbage}"
        );
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, "nothing here\n").unwrap();
        let bad_key = TlsSettings::load(&cert, &key).unwrap_err();
        assert!(bad_key.to_string().contains("key.pem"), "{bad_key}");
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let settings = TlsSettings::load(&cert, &key).unwrap();
        assert_eq!(settings.web.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(settings.streams.alpn_protocols.is_empty());
        assert_eq!(&settings.leaf, generated.cert.der());
    }
}
