//! TLS for the webhook: the serving certificate from PEM files, reloaded
//! when the files change (a renewed Secret), and a listener that hands over
//! connections once their handshake is done, within a time limit and a cap
//! on open connections.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::{
    net::TcpListener,
    sync::{mpsc, Semaphore},
};
use tokio_rustls::{
    rustls::{
        self,
        crypto::CryptoProvider,
        pki_types::{CertificateDer, PrivateKeyDer},
        server::{ClientHello, ResolvesServerCert},
        sign::CertifiedKey,
        ServerConfig,
    },
    server::TlsStream,
    TlsAcceptor,
};

/// A certificate or key that cannot be used, with the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate (expected a `BEGIN CERTIFICATE` block, e.g. tls.crt from gen-certs.sh)")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (expected `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`)")]
    NoKey { path: PathBuf },
    #[error("{path}: bad PEM: {source}")]
    Pem { path: PathBuf, source: std::io::Error },
    #[error("certificate {cert} and key {key} cannot serve together: {source}")]
    Mismatch { cert: PathBuf, key: PathBuf, source: rustls::Error },
    #[error("TLS setup: {0}")]
    Config(rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.into(), source })
}

fn certified_key(cert_pem: &[u8], key_pem: &[u8], cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Pem { path: cert.into(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.into() });
    }
    let private: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|source| TlsError::Pem { path: key.into(), source })?
        .ok_or_else(|| TlsError::NoKey { path: key.into() })?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|source| TlsError::Mismatch {
        cert: cert.into(),
        key: key.into(),
        source,
    })
}

/// The process-wide crypto provider (aws-lc-rs, which the S3 client also
/// uses), installed once so rustls never has to guess between providers.
pub fn provider() -> Arc<CryptoProvider> {
    if let Some(p) = CryptoProvider::get_default() {
        return Arc::clone(p);
    }
    // Losing a race with another installer is fine: either one is aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    CryptoProvider::get_default()
        .map(Arc::clone)
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// The serving certificate, swapped in place when its files change.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// The PEM bytes in use and the key built from them.
    current: RwLock<(Vec<u8>, Vec<u8>, Arc<CertifiedKey>)>,
}

impl CertStore {
    /// Loads the pair; fails with the file at fault.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
        let key = certified_key(&cert_pem, &key_pem, cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.into(),
            key_path: key_path.into(),
            current: RwLock::new((cert_pem, key_pem, Arc::new(key))),
        })
    }

    /// Re-reads the files; swaps in a changed pair that is valid. Returns
    /// whether the certificate changed. A bad or half-written pair keeps the
    /// old one (Secret updates swap both files at once, so the next poll
    /// sees a consistent pair).
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (cert_pem, key_pem) = (read(&self.cert_path)?, read(&self.key_path)?);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == cert_pem && current.1 == key_pem {
                return Ok(false);
            }
        }
        let key = certified_key(&cert_pem, &key_pem, &self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (cert_pem, key_pem, Arc::new(key));
        Ok(true)
    }

    /// Polls the files every `every` and reloads on change, forever.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!("keeping the current certificate: {e}"),
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()).2))
    }
}

/// The rustls server config: HTTP/1.1 only (the API server speaks it to webhooks).
pub fn server_config(store: Arc<CertStore>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A connection whose handshake is done. It holds one of the listener's
/// connection slots until dropped.
pub type Accepted = crate::http_serve::Accepted<TlsStream<tokio::net::TcpStream>>;

/// A TLS listener. Handshakes run in their own tasks, so one slow or broken
/// client never holds up the others; each has `handshake_timeout`, and at
/// most `max_connections` are open at once (handshakes included): past
/// that, new connections wait in the kernel's backlog.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<Accepted>,
}

impl TlsListener {
    pub fn new(
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        handshake_timeout: Duration,
        max_connections: usize,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let slots = Arc::new(Semaphore::new(max_connections.max(1)));
        tokio::spawn(async move {
            loop {
                // Never closed: the semaphore lives in this task.
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
                let (stream, peer) = match tcp.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Accepted { stream, peer, slot }).await;
                        }
                        Ok(Err(e)) => tracing::warn!(
                            %peer,
                            "TLS handshake failed: {e} (if the API server is the client, its caBundle \
                             does not match this certificate: rerun k8s/webhook/patch-ca-bundle.sh)"
                        ),
                        Err(_) => tracing::warn!(%peer, "TLS handshake timed out after {handshake_timeout:?}"),
                    }
                });
            }
        });
        Ok(Self { local, ready })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl crate::http_serve::Incoming for TlsListener {
    type Stream = TlsStream<tokio::net::TcpStream>;

    /// The next connection whose handshake is done.
    async fn accept(&mut self) -> Accepted {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let e = CertStore::load(&cert, &key).unwrap_err().to_string();
        assert!(e.starts_with(&format!("cannot read {}", cert.display())), "{e}");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let e = CertStore::load(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }
}
