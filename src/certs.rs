//! Dev certificates (rcgen) and the rustls server configuration.
//!
//! `certs` writes a CA (`ca.crt`) and a serving cert signed by it (`tls.crt`, `tls.key`):
//! rustls refuses a self-signed CA certificate used as the leaf, and the apiserver's
//! `caBundle` must hold the CA, not the leaf. The CA key is not kept: re-run `certs` to
//! issue a new pair (in a cluster use cert-manager).

use anyhow::{anyhow, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

/// DNS names of the in-cluster Service (namespace `sidecar-sizer`, service `sidecar-sizer`).
pub const DEFAULT_DNS: [&str; 5] = [
    "localhost",
    "sidecar-sizer",
    "sidecar-sizer.sidecar-sizer",
    "sidecar-sizer.sidecar-sizer.svc",
    "sidecar-sizer.sidecar-sizer.svc.cluster.local",
];

pub struct CertBundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A fresh CA (path length 0: it signs leaves only): its issuer and its PEM.
///
/// Each CA gets a subject of its own (`<common_name> <16 hex digits of its public key>`)
/// and a Subject Key Identifier. During a rotation the apiserver's `caBundle` holds the
/// old and the new CA; OpenSSL looks issuers up by subject name, so two CAs with one name
/// made every certificate from the second fail with "certificate signature failure".
fn new_ca(common_name: &str) -> anyhow::Result<(Issuer<'static, KeyPair>, String)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("{common_name} {}", key_suffix(&ca_key)),
    );
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    Ok((Issuer::new(ca, ca_key), ca_cert.pem()))
}

/// 16 hex digits from the middle of a fresh key's public key (random for every key).
fn key_suffix(key: &KeyPair) -> String {
    let raw = key.public_key_raw();
    let tail = &raw[raw.len().saturating_sub(8)..];
    tail.iter().map(|b| format!("{b:02x}")).collect()
}

/// A leaf's parameters: not a CA (explicitly, so it carries a Subject Key Identifier) and
/// an Authority Key Identifier naming its CA's key.
fn leaf_params() -> anyhow::Result<CertificateParams> {
    let mut leaf = CertificateParams::new(Vec::<String>::new())?;
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.use_authority_key_identifier_extension = true;
    Ok(leaf)
}

/// A fresh CA and a serving certificate for `dns` names and `ips`.
pub fn generate(dns: &[String], ips: &[IpAddr]) -> anyhow::Result<CertBundle> {
    let (issuer, ca_pem) = new_ca("sidecar-sizer dev CA")?;

    let mut leaf = leaf_params()?;
    for name in dns {
        leaf.subject_alt_names.push(SanType::DnsName(
            name.clone()
                .try_into()
                .with_context(|| format!("invalid DNS name {name:?}"))?,
        ));
    }
    for ip in ips {
        leaf.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    if leaf.subject_alt_names.is_empty() {
        return Err(anyhow!(
            "a serving certificate needs at least one --dns or --ip"
        ));
    }
    let cn = dns
        .first()
        .cloned()
        .or_else(|| ips.first().map(|i| i.to_string()))
        .unwrap_or_default();
    leaf.distinguished_name.push(DnType::CommonName, cn);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(CertBundle {
        ca_pem,
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// A fresh CA and a client certificate signed by it (for `--client-ca` tests and setups:
/// the apiserver presents such a certificate via its admission kubeconfig).
pub fn generate_client(common_name: &str) -> anyhow::Result<CertBundle> {
    let (issuer, ca_pem) = new_ca("sidecar-sizer client CA")?;
    let mut leaf = leaf_params()?;
    leaf.distinguished_name
        .push(DnType::CommonName, common_name);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(CertBundle {
        ca_pem,
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// Write `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`.
pub fn write(dir: &Path, bundle: &CertBundle) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let put = |name: &str, text: &str, private: bool| -> anyhow::Result<()> {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            if private {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    };
    put("ca.crt", &bundle.ca_pem, false)?;
    put("tls.key", &bundle.key_pem, true)?;
    put("tls.crt", &bundle.cert_pem, false)?;
    Ok(())
}

/// rustls server config (ring provider, TLS 1.2+, ALPN h2 and http/1.1) from PEM bytes;
/// with `client_ca_pem`, clients must present a certificate signed by that CA.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .context("reading certificate PEM")?;
    if certs.is_empty() {
        return Err(anyhow!("no certificate found in the certificate PEM"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("reading private key PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.context("reading client CA PEM")?)
                    .context("client CA certificate")?;
            }
            if roots.is_empty() {
                return Err(anyhow!("no certificate found in the client CA PEM"));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("certificate and key do not form a valid pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Read cert, key (and client CA) files and build the server config; the second value
/// is the files' content, to notice when they change.
pub fn load_server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<(Arc<ServerConfig>, Vec<u8>)> {
    let cert_pem =
        std::fs::read(cert).with_context(|| format!("reading --tls-cert {}", cert.display()))?;
    let key_pem =
        std::fs::read(key).with_context(|| format!("reading --tls-key {}", key.display()))?;
    let ca_pem = match client_ca {
        Some(p) => {
            Some(std::fs::read(p).with_context(|| format!("reading --client-ca {}", p.display()))?)
        }
        None => None,
    };
    let config = server_config(&cert_pem, &key_pem, ca_pem.as_deref())
        .with_context(|| format!("{} / {}", cert.display(), key.display()))?;
    let mut fingerprint = cert_pem;
    fingerprint.extend_from_slice(&key_pem);
    fingerprint.extend_from_slice(ca_pem.as_deref().unwrap_or_default());
    Ok((config, fingerprint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_loads_into_rustls() {
        let b = generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
        assert!(b.ca_pem.contains("BEGIN CERTIFICATE"));
        assert!(b.key_pem.contains("PRIVATE KEY"));
        server_config(b.cert_pem.as_bytes(), b.key_pem.as_bytes(), None).unwrap();
        let c = generate_client("kube-apiserver").unwrap();
        server_config(
            b.cert_pem.as_bytes(),
            b.key_pem.as_bytes(),
            Some(c.ca_pem.as_bytes()),
        )
        .unwrap();
        // The CA cert is not the leaf.
        assert_ne!(b.ca_pem, b.cert_pem);
        assert!(generate(&[], &[]).is_err());
        assert!(server_config(b"", b.key_pem.as_bytes(), None).is_err());
        assert!(server_config(b.cert_pem.as_bytes(), b.key_pem.as_bytes(), Some(b"")).is_err());
    }
}
