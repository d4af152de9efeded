//! TLS termination: the rustls server configuration, certificate selection by
//! SNI, and the self-signed development certificate.
//!
//! rustls runs with the aws-lc-rs provider, TLS 1.2 and 1.3 only, and ALPN
//! `h2` then `http/1.1`. Several certificate/key pairs may be configured; the
//! client's SNI picks one (exact name first, then `*.suffix`), and the default
//! pair answers when SNI is absent or matches nothing. A reload swaps in
//! a new set of pairs without touching open connections ([`Certificates`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Certificate;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    Load { path: String, message: String },
    #[error("creating self-signed certificate: {0}")]
    SelfSigned(String),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider olive uses everywhere.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the server configuration for the https listeners, choosing
/// certificates from `certificates` (which a reload may replace).
pub fn server_config(certificates: Arc<Certificates>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates the https listeners serve. A reload loads the new
/// set whole and swaps it in ([`Certificates::replace`]): handshakes
/// from then on get the new certificates, connections already
/// established keep theirs, and a set that fails to load replaces
/// nothing.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<SniResolver>,
}

impl Certificates {
    pub fn load(certificates: &[Certificate]) -> Result<Certificates, TlsError> {
        let resolver = SniResolver::load(certificates, &provider())?;
        Ok(Certificates { current: ArcSwap::from_pointee(resolver) })
    }

    /// Loads `certificates` and, if every pair loads, serves them to new
    /// handshakes.
    pub fn replace(&self, certificates: &[Certificate]) -> Result<(), TlsError> {
        let resolver = SniResolver::load(certificates, &provider())?;
        self.current.store(Arc::new(resolver));
        Ok(())
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().pick(hello.server_name()))
    }
}

/// Picks the certified key for a ClientHello by its SNI name.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `(".example.com", key)` for `*.example.com`, longest suffix first.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn load(certificates: &[Certificate], provider: &CryptoProvider) -> Result<Self, TlsError> {
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        let mut default = None;
        for (i, c) in certificates.iter().enumerate() {
            if c.self_signed_if_missing && !(c.cert.exists() && c.key.exists()) {
                write_self_signed(&c.cert, &c.key, &c.server_names)?;
            }
            let key = Arc::new(load_pair(&c.cert, &c.key, provider)?);
            for name in &c.server_names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix('*') {
                    Some(suffix) => wildcard.push((suffix.to_owned(), key.clone())),
                    None => {
                        exact.insert(name, key.clone());
                    }
                }
            }
            if c.default || (i == 0 && !certificates.iter().any(|c| c.default)) {
                default = Some(key);
            }
        }
        wildcard.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        let default = default.ok_or_else(|| TlsError::Load {
            path: "certificate".into(),
            message: "no certificate configured".into(),
        })?;
        Ok(Self { exact, wildcard, default })
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni else { return self.default.clone() };
        // rustls hands us the name already lower-cased and validated.
        if let Some(key) = self.exact.get(name) {
            return key.clone();
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map_or_else(|| self.default.clone(), |(_, key)| key.clone())
    }
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let err = |path: &Path, message: String| TlsError::Load { path: path.display().to_string(), message };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(err(cert, "no certificate in file".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| err(key, e.to_string()))?;
    let signing = provider.key_provider.load_private_key(der).map_err(|e| err(key, e.to_string()))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|e| err(key, format!("does not match {}: {e}", cert.display())))?;
    Ok(pair)
}

/// Writes a self-signed certificate for `names` (default `localhost` and the
/// loopback addresses) and its private key, readable by the owner only.
pub fn write_self_signed(cert: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    let names = if names.is_empty() {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()]
    } else {
        names.to_vec()
    };
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let write = |path: &Path, text: String, mode: u32| -> Result<(), TlsError> {
        let io =
            |e: std::io::Error| TlsError::Load { path: path.display().to_string(), message: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(path, text).map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)
    };
    write(cert, generated.cert.pem(), 0o644)?;
    write(key, generated.signing_key.serialize_pem(), 0o600)?;
    tracing::warn!(cert = %cert.display(), "created a self-signed certificate: for development only");
    Ok(())
}
